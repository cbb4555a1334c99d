"""One module per CLI command group; each exposes `register(app)` and stays thin over library functions."""
