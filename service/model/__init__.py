"""The model runtime: a registry version made ready to serve, tokenising, the ONNX embedder, prompts, the
execution provider, and memory given back after large requests."""
