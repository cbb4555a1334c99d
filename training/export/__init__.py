"""ONNX export: one self-contained graph per Matryoshka dim, fp32 and int8 (+ fp16), each checked."""
