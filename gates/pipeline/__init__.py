"""The gated path end to end: data gate -> mine -> train -> export -> evaluate -> gate -> promote.

- `config`: the pipeline config (the training config plus one section per later stage).
- `stages`: steps several commands share (new run directory, data gate on loaded or mined rows).
- `run`: `run_pipeline`, every stage in order, promote on pass.
- `served_call`: the demo's last step: start the service on the champion and call it once.
- `run_report`: report.html, one self-contained page per run (`embedgate report RUN`).
- `tracking`: optional MLflow tracking of a run, and the champion alias in MLflow's model registry.
"""
