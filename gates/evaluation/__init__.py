"""Evaluation: score the exact served artifacts (ONNX through the service's embedder) against the baseline.

- `evaluate`: the stage (`run_evaluation`), candidate and baseline on the same data in one run.
- `encoders`: the ways a model becomes vectors (ONNX fp32/int8, PyTorch reference).
- `retrieval_metrics`: NDCG, MRR, MAP, Recall, Precision, F1 at K; exact top-K search; STS correlations.
- `significance`: the paired randomization test and bootstrap CI the gate uses.
- `results`: the typed, JSON-round-tripping results the gate reads.
- `report`: the Markdown table and metric-vs-dimension plot.
"""
