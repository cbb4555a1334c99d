"""deploy/k8s.yaml stays runnable: parsed, every `embedgate` command and option is one the CLI accepts, every
EMBEDGATE_* variable one the settings read, the readiness probe a route the service answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
import yaml

from gates.cli import _register_commands, app
from service.drift.settings import ENV_PREFIX as DRIFT_PREFIX
from service.drift.settings import DriftSettings
from service.registry.object_registry import CACHE_ENV
from service.settings import ServeSettings, env_var

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "k8s.yaml"
ACCEPTED_ENV = (
    {env_var(name) for name in ServeSettings.model_fields}
    | {DRIFT_PREFIX + name.upper() for name in DriftSettings.model_fields}
    | {CACHE_ENV}
)


def _documents() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def _pod_spec(doc: dict) -> dict:
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    raise AssertionError(doc["kind"])


def _containers() -> list[tuple[str, dict]]:
    return [
        (doc["kind"], c)
        for doc in _documents()
        if doc["kind"] in ("Deployment", "CronJob")
        for c in _pod_spec(doc)["containers"]
    ]


def test_the_manifest_has_the_replica_set_the_probe_and_the_drift_job():
    kinds = [doc["kind"] for doc in _documents()]
    assert {"Deployment", "CronJob", "Service"} <= set(kinds)
    deployment = next(doc for doc in _documents() if doc["kind"] == "Deployment")
    serve = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] > 1
    assert serve["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert serve["command"][:2] == ["embedgate", "serve"]
    cron = next(doc for doc in _documents() if doc["kind"] == "CronJob")
    assert _pod_spec(cron)["containers"][0]["command"][:2] == ["embedgate", "drift"]
    assert len({c["image"] for _, c in _containers()}) == 1  # one image for serving and judging


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_commands_parse_with_the_cli(kind):
    _register_commands()  # what `embedgate` does at start
    root = typer.main.get_command(app)
    for container_kind, container in _containers():
        if container_kind != kind:
            continue
        program, name, *args = container["command"]
        assert program == "embedgate"
        command = root.commands[name]  # KeyError: a subcommand the CLI does not have
        try:
            context = command.make_context(name, list(args), resilient_parsing=False)
        except Exception as err:  # an unknown option or a bad value (typer vendors click's UsageError)
            pytest.fail(f"{kind}: `embedgate {name} {' '.join(args)}` does not parse: {err}")
        registry = context.params["registry"]
        assert str(registry).startswith("s3://"), registry  # kept as a URL, not folded into a path
        if name == "drift":  # the replicas' windows are in the bucket too
            assert str(context.params["drift_dir"]).startswith("s3://"), context.params["drift_dir"]


def test_every_embedgate_variable_is_one_the_settings_read():
    for kind, container in _containers():
        names = {entry["name"] for entry in container.get("env", [])}
        unknown = sorted(n for n in names if n.startswith("EMBEDGATE_") and n not in ACCEPTED_ENV)
        assert not unknown, f"{kind}: {unknown} are not read by the service or the drift settings"
    deployment_env = {
        e["name"]: e.get("value") for kind, c in _containers() if kind == "Deployment" for e in c["env"]
    }
    settings = ServeSettings.from_env(
        {
            k: v
            for k, v in deployment_env.items()
            if v is not None
            and k.startswith("EMBEDGATE_")
            and not k.startswith(DRIFT_PREFIX)
            and k != CACHE_ENV
        }
    )
    assert settings.poll_interval_s == float(deployment_env["EMBEDGATE_POLL_INTERVAL_S"])
    drift = DriftSettings.from_env({k: v for k, v in deployment_env.items() if k.startswith(DRIFT_PREFIX)})
    assert drift.on_object_store and drift.dir == "s3://models/drift"  # a URL, not folded into a path
