"""embedgate.service: the runtime. ONNX embedder, registry, BentoML service, drift monitoring.

Imports no torch and nothing from `training` or `gates`, so the served image stays small.
"""
