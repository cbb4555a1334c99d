"""embedgate.training: dataset formats and loading, hard-negative mining, losses, fine-tuning, ONNX export.

Knows nothing of `gates` or `service`. Heavy libraries (torch, sentence-transformers, datasets) are imported
inside the functions that need them, so importing this package is cheap.
"""
