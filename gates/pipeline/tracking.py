"""Optional experiment tracking in MLflow, where many teams already look: one MLflow run per pipeline run.

    tracking: {mlflow: http://mlflow.internal:5000}          # in the pipeline config (or --set tracking.mlflow=URI)

Logged: the resolved config as params, every training log step (loss, dev NDCG@10 per dim) as step metrics,
candidate and baseline metrics per backend and dim, the gate decision (passed, each check's delta and p-value, and
decision.json), stage timings, and report.html. A promoted version is registered in MLflow's model registry with
the `champion` alias. embedgate's own registry stays the source of truth for serving: the MLflow version's
artifact is a pointer (`embedgate.json`: registry, version, manifest sha256, serving dim), not another copy of
the graphs.

Uses the mlflow client (mlflow-skinny: no server dependencies in the pipeline's environment); the tracking
server is whatever the URI names.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gates.errors import EmbedgateGateError
from training.run_dir import RunPaths, write_json_atomic

CHAMPION_ALIAS = "champion"


class TrackingError(EmbedgateGateError):
    """The tracking server could not be reached or refused what was logged."""


def log_pipeline_run(
    uri: str,
    experiment: str,
    model_name: str,
    run: RunPaths,
    outcome: dict,
    config: dict,
    registry: Path | None = None,
) -> dict:
    """Log one pipeline run; register and alias the promoted version. -> {run_id, experiment_id, model_version}."""
    try:
        from mlflow import MlflowClient
    except ImportError as err:
        raise TrackingError(
            "tracking.mlflow is set but mlflow is not installed: pip install "
            "'mlflow-skinny==3.17.2' (in requirements/lock.txt), or remove tracking.mlflow"
        ) from err
    from mlflow.entities import Param

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        mlflow_run = client.create_run(
            experiment_id,
            run_name=run.run_id,
            tags={"embedgate.run_id": run.run_id, "embedgate.status": outcome["status"]},
        )
    except Exception as err:  # the client raises MlflowException / requests errors for an unreachable server
        raise TrackingError(
            f"tracking.mlflow {uri}: cannot create a run ({type(err).__name__}: {err}); check "
            f"that the tracking server is up, or remove tracking.mlflow"
        ) from None
    run_id = mlflow_run.info.run_id
    params = [Param(k, str(v)[:6000]) for k, v in sorted(_flatten(config).items())]
    metrics = _step_metrics(run) + _final_metrics(run, outcome)
    for start in range(0, len(params), 100):  # the REST API takes at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for path, folder in (
        (run.gate / "decision.json", "gate"),
        (run.root / "pipeline.json", None),
        (run.root / "report.html", None),
        (run.eval / "summary.md", "eval"),
    ):
        if path.is_file():
            client.log_artifact(run_id, str(path), folder)
    version = None
    promotion = outcome.get("promotion")
    if outcome["status"] == "promoted" and promotion:
        version = _register(client, model_name, run_id, run, promotion, registry)
    client.set_terminated(run_id, "FINISHED" if outcome["exit_code"] in (0, 1) else "FAILED")
    result = {"uri": uri, "experiment_id": experiment_id, "run_id": run_id, "model_version": version}
    write_json_atomic(run.root / "tracking.json", result)
    return result


def _register(client, name: str, run_id: str, run: RunPaths, promotion: dict, registry: Path | None) -> str:
    from mlflow.exceptions import MlflowException

    from training.run_dir import sha256_file

    manifest = Path(registry) / "versions" / promotion["version"] / "manifest.json" if registry else None
    pointer = {
        "embedgate_version": promotion["version"],
        "registry": str(Path(registry).resolve()) if registry else None,
        "run_id": run.run_id,
        "serving_dim": promotion.get("serving_dim"),
        "manifest_sha256": sha256_file(manifest) if manifest and manifest.is_file() else None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "embedgate.json").write_text(json.dumps(pointer, indent=2) + "\n")
        client.log_artifacts(run_id, tmp, "model")
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name,
            description="embedgate champions (the served registry is "
            "embedgate's; these versions point to it)",
        )
    created = client.create_model_version(
        name, source, run_id=run_id, tags={"embedgate.version": str(promotion.get("version"))}
    )
    client.set_registered_model_alias(name, CHAMPION_ALIAS, created.version)
    return str(created.version)


def _step_metrics(run: RunPaths) -> list:
    """Every numeric value of train_log.jsonl at its step (loss, learning rate, dev NDCG@10 per dim)."""
    from mlflow.entities import Metric

    if not run.train_log.is_file():
        return []
    out = []
    for line in run.train_log.read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        step = int(record.get("step", 0))
        for key, value in record.items():
            if (
                key not in ("step", "epoch")
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                out.append(Metric(_key(f"train/{key}"), float(value), 0, step))
    return out


def _final_metrics(run: RunPaths, outcome: dict) -> list:
    from mlflow.entities import Metric

    out = []
    for label in ("candidate", "baseline"):
        path = run.eval / f"{label}.json"
        if path.is_file():
            results = json.loads(path.read_text())
            means = [(e, e["mean"]) for e in results.get("retrieval", [])]
            means += [
                (e, {m: e[m] for m in ("spearman", "pearson")}) for e in results.get("scored_pairs", [])
            ]
            for entry, values in means:
                for metric, value in values.items():
                    out.append(
                        Metric(_key(f"{label}/{entry['backend']}/d{entry['dim']}/{metric}"), value, 0, 0)
                    )
    if (run.gate / "decision.json").is_file():
        decision = json.loads((run.gate / "decision.json").read_text())
        out.append(Metric("gate/passed", float(bool(decision["passed"])), 0, 0))
        for row in decision["checks"]:
            for field in ("delta", "p_value"):
                if isinstance(row.get(field), (int, float)):
                    out.append(
                        Metric(
                            _key(f"gate/{row['check']}/{row.get('metric') or ''}/{field}"),
                            float(row[field]),
                            0,
                            0,
                        )
                    )
    for stage in outcome.get("stages", []):
        out.append(Metric(_key(f"stage_seconds/{stage['name']}"), float(stage["seconds"]), 0, 0))
    return out


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces: `@` (ndcg@10) becomes `_at_`."""
    return name.replace("@", "_at_").replace("+", "_").replace("//", "/")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}
