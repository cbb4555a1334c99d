"""The registry after a kill, a leftover and a bad line: `embedgate promote` SIGKILLed at each step (a test hook in
service/registry/registry.py), then every command still reads the registry and the history tells the truth; leftovers are
cleaned by the next command; damaged history lines are skipped with a warning, never a traceback; the same run
promoted twice is refused; `embedgate promote` keeps the run's drift reference."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from gates.cli import main
from service.registry.registry import KILL_AT_ENV, RECONCILER, Registry
from tests.gates.gated_runs import make_gated_run

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _promote_cli(run, registry, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "EMBEDGATE_USER": "tests"}
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gates.cli",
            "promote",
            str(run.root),
            "--registry",
            str(registry),
            "--no-bento-store",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


def _history(registry, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["history", "--registry", str(registry), "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(
    "step, champion, versions",
    [
        ("staged", "v0001", ["v0001"]),
        ("version_visible", "v0001", ["v0001", "v0002"]),
        ("champion_switched", "v0002", ["v0001", "v0002"]),
        ("history_written", "v0002", ["v0001", "v0002"]),
    ],
)
def test_a_promotion_killed_at_any_step_leaves_a_registry_whose_history_tells_the_truth(
    tmp_path, capsys, step, champion, versions
):
    registry = tmp_path / "registry"
    assert _promote_cli(make_gated_run(tmp_path, "first", True), registry).returncode == 0
    second = make_gated_run(tmp_path, "second", True, registry)
    killed = _promote_cli(second, registry, kill_at=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    history = _history(registry, capsys)  # the next command, read-only for the user, repairs first
    reg = Registry(registry)
    assert reg.champion().version == champion and reg.versions() == versions
    assert not list((registry / "versions").glob(".tmp-*")) and not list(registry.glob(".*.tmp-*"))
    switches = [entry for entry in history if entry["action"] in ("promote", "rollback")]
    assert switches[-1]["version"] == champion  # the last recorded switch is the champion
    if step == "champion_switched":
        assert switches[-1]["who"] == RECONCILER and switches[-1]["from_version"] == "v0001"
        assert switches[-1]["run_id"] == "second"
    if step == "version_visible":  # built, never served: recorded as such, and the retry is not a "duplicate"
        assert history[-1]["action"] == "interrupted" and history[-1]["version"] == "v0002"
        retried = _promote_cli(second, registry)
        assert retried.returncode == 0, retried.stderr
        assert Registry(registry).champion().version == "v0003"
    for version in reg.versions():
        reg.verify(version)
    assert main(
        ["rollback", "--registry", str(registry), "--no-bento-store", "--reason", "after the kill"]
    ) in (0, 2)
    assert Registry(registry).champion() is not None


def test_leftovers_are_removed_by_the_next_command_that_takes_the_lock(tmp_path, capsys):
    registry = tmp_path / "registry"
    assert _promote_cli(make_gated_run(tmp_path, "first", True), registry).returncode == 0
    (registry / ".champion.json.tmp-4242").write_text('{"version": "v00')
    (registry / "versions" / ".tmp-v0002-4242" / "onnx").mkdir(parents=True)
    (registry / "versions" / ".tmp-v0002-4242" / "onnx" / "big.bin").write_bytes(b"x" * 4096)
    _history(registry, capsys)
    assert not (registry / ".champion.json.tmp-4242").exists()
    assert not (registry / "versions" / ".tmp-v0002-4242").exists()


@pytest.mark.parametrize(
    "damage",
    [
        b'{"time": "t", "action": "promote"\n',
        b'{"who": "caf\xe9"}\n',
        b'{"time": "t", "action": "promote", "version": "v0002", "from_version": null, '
        b'"who": null, "reason": null}\n',
        b"[1, 2]\n",
        b"\xff\xfe\n",
    ],
)
def test_a_damaged_history_line_is_skipped_with_a_warning_and_rollback_still_works(tmp_path, capsys, damage):
    registry = tmp_path / "registry"
    assert _promote_cli(make_gated_run(tmp_path, "first", True), registry).returncode == 0
    assert _promote_cli(make_gated_run(tmp_path, "second", True, registry), registry).returncode == 0
    with open(registry / "history.jsonl", "ab") as handle:
        handle.write(damage)
    capsys.readouterr()
    assert main(["history", "--registry", str(registry)]) == 0
    out = capsys.readouterr()
    assert "champion: v0002" in out.out and "line 3 skipped, not a history entry" in out.err
    assert "Traceback" not in out.out + out.err
    assert main(["rollback", "--registry", str(registry), "--no-bento-store", "--reason", "emergency"]) == 0
    assert "rolled back: v0001 is the champion" in capsys.readouterr().out
    assert Registry(registry).champion().version == "v0001"


def test_the_same_run_promoted_twice_is_refused_as_a_duplicate(tmp_path, capsys):
    registry = tmp_path / "registry"
    run = make_gated_run(tmp_path, "first", True)
    assert _promote_cli(run, registry).returncode == 0
    again = _promote_cli(run, registry)
    assert again.returncode == 1
    assert (
        "refused: run first is already v0001 of this registry (same serving dim and precision); it is the "
        "champion now; nothing was promoted" in again.stderr
    )
    assert Registry(registry).versions() == ["v0001"]


def test_embedgate_promote_keeps_the_runs_drift_reference(tmp_path):
    registry = tmp_path / "registry"
    run = make_gated_run(tmp_path, "first", True)
    (run.root / "reference").mkdir()
    (run.root / "reference" / "spec.json").write_text('{"dim": 32}')
    assert _promote_cli(run, registry).returncode == 0
    manifest = Registry(registry).verify("v0001")
    assert "reference/spec.json" in manifest["files"]


def test_concurrent_promotions_gated_against_the_same_champion_promote_one(tmp_path):
    """Four CI jobs whose gates all compared against the same champion (none) promote at once: one becomes the
    champion; the other three are refused (each was not gated against it), recorded, and nothing of theirs is
    stored. The champion is read under the lock, so no two of them can both win."""
    from concurrent.futures import ThreadPoolExecutor

    from gates.promotion import PromotionRefused, promote_run

    registry = tmp_path / "registry"
    runs = [make_gated_run(tmp_path, f"run-{index}", True) for index in range(4)]

    def attempt(run):
        try:
            return promote_run(run, registry, bento_store=False)
        except PromotionRefused as refused:
            return refused

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(attempt, runs))
    promoted = [o for o in outcomes if not isinstance(o, PromotionRefused)]
    refused = [o for o in outcomes if isinstance(o, PromotionRefused)]
    assert len(promoted) == 1 and promoted[0].version == "v0001" and promoted[0].previous is None
    assert len(refused) == 3
    for error in refused:
        message = str(error)
        assert "champion" in message and ("re-gate" in message.lower()), message
    reg = Registry(registry)
    assert reg.versions() == ["v0001"] and reg.champion().version == "v0001"
    history = reg.history()
    assert [entry.action for entry in history].count("refused") == 3
    assert {entry.run_id for entry in history if entry.action == "refused"} == {
        run.run_id for run in runs
    } - {promoted[0].run_id}
