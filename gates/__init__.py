"""embedgate.gates: data checks, metrics, evaluation, parity, gate policy, promotion, the CLI and the pipeline.

Sits on top of `training` and `service`; evaluates through `service`'s ONNX embedder so that what is gated is
exactly what is served.
"""
