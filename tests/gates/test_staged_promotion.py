"""Staged promotion, cutover, rollback and the promotion events (gates/promotion.py, service/registry/aliases.py,
gates/promotion_events.py): the champion moves only on cutover, a dim change needs the flag, rollback restores,
every move records `reembed_required`, and a signed webhook reaches a real local receiver or is recorded as
failed without undoing anything."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gates.cli import main
from gates.promotion import cutover, promote_run, rollback
from gates.promotion_events import SECRET_ENV, Webhook, WebhookConfigError
from service.errors import RegistryError
from service.registry.aliases import CutoverRefused, RollbackRefused, read_state
from service.registry.registry import Registry
from tests.gates.gated_runs import make_gated_run, regate
from tests.service.serving import free_port
from training.run_dir import RunPaths

SECRET = "test-webhook-secret-7f3a"


def _run(tmp_path, name, serving_dim=32):
    """A passing run gated against the champion of tmp_path/registry (the registry every test here uses)."""
    run = make_gated_run(tmp_path, name, True, tmp_path / "registry")
    decision = json.loads((run.gate / "decision.json").read_text())
    (run.gate / "decision.json").write_text(json.dumps({**decision, "serving_dim": serving_dim}))
    return run


def test_staged_promotion_leaves_the_champion_until_cutover_and_rollback_restores_it(tmp_path):
    root = tmp_path / "registry"
    registry = Registry(root)
    promote_run(_run(tmp_path, "first"), root, bento_store=False)
    staged = promote_run(_run(tmp_path, "second"), root, bento_store=False, mode="staged")
    assert (staged.version, staged.alias, staged.previous, staged.reembed_required) == (
        "v0002",
        "candidate",
        "v0001",
        True,
    )
    state = read_state(registry)
    assert (state.champion, state.candidate, state.servable) == ("v0001", "v0002", ("v0001", "v0002"))

    done = cutover(root, "v0002", who="ops", reason="corpus re-embedded", bento_store=False)
    assert (done.result.previous, done.result.reembed_required, done.result.dim_changed) == (
        "v0001",
        True,
        False,
    )
    state = read_state(registry)
    assert (state.champion, state.candidate) == ("v0002", None)

    back = rollback(root, reason="regression", bento_store=False)
    assert (back.version, back.reembed_required) == ("v0001", True)
    assert registry.champion().version == "v0001"
    actions = [(e.action, e.version, e.from_version, e.alias, e.reembed_required) for e in registry.history()]
    assert actions == [
        ("promote", "v0001", None, "champion", False),
        ("promote", "v0002", "v0001", "candidate", True),
        ("cutover", "v0002", "v0001", "champion", True),
        ("rollback", "v0001", "v0002", "champion", True),
    ]


def test_a_cutover_that_changes_the_default_dim_is_refused_without_the_flag_and_recorded(tmp_path):
    root = tmp_path / "registry"
    registry = Registry(root)
    promote_run(_run(tmp_path, "first", serving_dim=32), root, bento_store=False)
    promote_run(_run(tmp_path, "second", serving_dim=16), root, bento_store=False, mode="staged")
    with pytest.raises(
        CutoverRefused, match=r"default dimensions would change from 32 to 16.*--allow-dim-change"
    ):
        cutover(root, "v0002", bento_store=False)
    assert registry.champion().version == "v0001"
    assert registry.history()[-1].action == "cutover_refused"
    done = cutover(root, "v0002", allow_dim_change=True, bento_store=False)
    assert done.result.dim_changed and registry.champion().version == "v0002"
    entry = registry.history()[-1]
    assert entry.action == "cutover" and entry.forced and "32 -> 16, allowed" in entry.reason


def test_cutover_errors_name_the_fix(tmp_path):
    root = tmp_path / "registry"
    promote_run(_run(tmp_path, "first"), root, bento_store=False)
    with pytest.raises(RegistryError, match=r"version v0007 not found .*versions: v0001"):
        cutover(root, "v0007", bento_store=False)
    with pytest.raises(RegistryError, match="expected a version id such as v0003, got 'latest'"):
        cutover(root, "latest", bento_store=False)
    with pytest.raises(RegistryError, match="v0001 is already the champion"):
        cutover(root, "v0001", bento_store=False)


def test_same_graphs_need_no_reembedding(tmp_path):
    root = tmp_path / "registry"
    run = _run(tmp_path, "first")
    promote_run(run, root, bento_store=False)
    # The same export under another run id (a re-gated run; the same run twice is refused as a duplicate).
    regated = RunPaths(shutil.copytree(run.root, run.root.with_name("first-regated")))
    regate(regated, root)
    again = promote_run(regated, root, bento_store=False)
    assert (again.version, again.reembed_required) == ("v0002", False)


class _Receiver:
    """A real HTTP server on 127.0.0.1 that records what it receives; answers `status` codes in turn."""

    def __init__(self, statuses=(200,)):
        received, codes = [], list(statuses)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(codes.pop(0) if len(codes) > 1 else codes[0])
                self.end_headers()

            def log_message(self, *args):
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_the_webhook_receives_each_signed_event_and_retries_a_5xx(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    root = tmp_path / "registry"
    with _Receiver(statuses=(503, 200)) as receiver:
        hook = Webhook.from_config(receiver.url, backoff_s=0.01)
        promote_run(_run(tmp_path, "first"), root, bento_store=False, webhook=hook)
        promote_run(_run(tmp_path, "second"), root, bento_store=False, mode="staged", webhook=hook)
        cutover(root, "v0002", bento_store=False, webhook=hook)
        rollback(root, bento_store=False, webhook=hook)
    events = []
    for headers, body in receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Embedgate-Signature"], expected)
        events.append(json.loads(body))
    assert len(events) == 5  # the first delivery was answered 503 and retried
    assert events[0]["delivery"] == events[1]["delivery"]
    assert [(e["event"], e["version"], e["alias"], e["reembed_required"]) for e in events[1:]] == [
        ("promotion", "v0001", "champion", False),
        ("promotion", "v0002", "candidate", True),
        ("cutover", "v0002", "champion", True),
        ("rollback", "v0001", "champion", True),
    ]
    assert not [e for e in Registry(root).history() if e.action == "webhook_failed"]


def test_a_receiver_that_is_down_neither_blocks_nor_undoes_the_promotion(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    root = tmp_path / "registry"
    hook = Webhook.from_config(
        f"http://127.0.0.1:{free_port()}/hook", attempts=3, backoff_s=0.01, timeout_s=1
    )
    started = time.monotonic()
    result = promote_run(_run(tmp_path, "first"), root, bento_store=False, webhook=hook)
    assert time.monotonic() - started < 10
    assert result.version == "v0001" and Registry(root).champion().version == "v0001"
    assert result.webhook_error.startswith("3 attempts failed, last: ConnectError")
    failed = Registry(root).history()[-1]
    assert failed.action == "webhook_failed" and failed.version == "v0001" and "ConnectError" in failed.reason


def test_a_webhook_without_its_secret_is_refused_before_promoting(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(WebhookConfigError, match=f"{SECRET_ENV} is empty"):
        Webhook.from_config("http://127.0.0.1:9/hook")
    with pytest.raises(WebhookConfigError, match="expected an http:// or https:// URL"):
        Webhook.from_config("ftp://example/hook")
    root = tmp_path / "registry"
    run = _run(tmp_path, "first")
    assert (
        main(
            [
                "promote",
                str(run.root),
                "--registry",
                str(root),
                "--no-bento-store",
                "--webhook",
                "http://127.0.0.1:9/hook",
            ]
        )
        == 2
    )
    assert f"{SECRET_ENV} is empty" in capsys.readouterr().err and not root.exists()


def test_cli_stage_cutover_refusal_rollback_and_history(tmp_path, capsys):
    root = tmp_path / "registry"
    args = ["--registry", str(root), "--no-bento-store"]
    assert main(["promote", str(_run(tmp_path, "first").root), *args]) == 0
    assert main(["promote", str(_run(tmp_path, "second", serving_dim=16).root), *args, "--staged"]) == 0
    out = capsys.readouterr().out
    assert "staged second as v0002 (the candidate; champion stays v0001" in out
    assert "embedgate cutover v0002" in out
    assert main(["cutover", "v0002", *args]) == 1
    assert "default dimensions would change from 32 to 16" in capsys.readouterr().err
    assert main(["cutover", "v0002", *args, "--allow-dim-change"]) == 0
    assert "v0002 is the champion (previous: v0001; default dimensions 32 -> 16" in capsys.readouterr().out
    assert main(["rollback", *args]) == 1  # back to 32: the same dim guard as cutover
    assert "rollback to v0001 refused: the champion's default dimensions would change from 16 to 32" in (
        capsys.readouterr().err
    )
    assert main(["rollback", *args, "--allow-dim-change"]) == 0
    assert "default dimensions 16 -> 32, allowed" in capsys.readouterr().out
    assert main(["retire", "v0002", "--registry", str(root)]) == 0
    assert main(["history", "--registry", str(root)]) == 0
    table = capsys.readouterr().out
    assert "champion: v0001; candidate: none; servable: v0001; retired: v0002" in table
    for action in ("promote", "cutover_refused", "cutover", "rollback_refused", "rollback", "retire"):
        assert f" {action} " in table


def test_a_rollback_that_changes_the_default_dim_is_refused_like_a_cutover_and_clears_the_candidate(tmp_path):
    """Issue 31 item 7: `rollback --to` the candidate at another dim went through silently and left the version
    both champion and candidate."""
    root = tmp_path / "registry"
    registry = Registry(root)
    promote_run(_run(tmp_path, "first", serving_dim=32), root, bento_store=False)
    promote_run(_run(tmp_path, "second", serving_dim=16), root, bento_store=False, mode="staged")
    with pytest.raises(
        RollbackRefused, match=r"rollback to v0002 refused: .* from 32 to 16.*--allow-dim-change"
    ):
        rollback(root, to="v0002", bento_store=False)
    assert registry.champion().version == "v0001"
    assert registry.history()[-1].action == "rollback_refused"
    done = rollback(root, to="v0002", allow_dim_change=True, bento_store=False)
    assert (done.version, done.rolled_back_from, done.previous_dim, done.serving_dim, done.dim_changed) == (
        "v0002",
        "v0001",
        32,
        16,
        True,
    )
    state = read_state(registry)
    assert (state.champion, state.candidate) == ("v0002", None)
    entry = registry.history()[-1]
    assert entry.action == "rollback" and entry.forced and "32 -> 16, allowed" in entry.reason


def test_after_cutover_and_rollback_a_further_rollback_names_the_servable_version(tmp_path, capsys):
    """Issue 31 item 7: after cutover then rollback, the output said "previous: none" and a second rollback told
    the user to promote another version although the one just left is servable."""
    root = tmp_path / "registry"
    args = ["--registry", str(root), "--no-bento-store"]
    assert main(["promote", str(_run(tmp_path, "first").root), *args]) == 0
    assert main(["promote", str(_run(tmp_path, "second").root), *args, "--staged"]) == 0
    assert main(["cutover", "v0002", *args]) == 0
    capsys.readouterr()
    assert main(["rollback", *args]) == 0
    out = capsys.readouterr().out
    assert "rolled back: v0001 is the champion (was v0002; default dimensions 32;" in out
    assert "v0001 was the first champion: `embedgate rollback --to VERSION` serves another" in out
    assert main(["rollback", *args]) == 2
    err = capsys.readouterr().err
    assert "v0001 is the first champion (no champion before it)" in err
    assert "embedgate rollback --to v0002 (servable: v0002)" in err
    assert main(["rollback", *args, "--to", "v0002"]) == 0
    assert Registry(root).champion().version == "v0002"
    assert "a further rollback goes to v0001" in capsys.readouterr().out


def test_rollback_refuses_a_retired_version_as_cutover_does(tmp_path):
    root = tmp_path / "registry"
    promote_run(_run(tmp_path, "first"), root, bento_store=False)
    promote_run(_run(tmp_path, "second"), root, bento_store=False)
    assert main(["retire", "v0001", "--registry", str(root)]) == 0
    with pytest.raises(RegistryError, match=r"cannot roll back to v0001: it is retired"):
        rollback(root, bento_store=False)
    assert Registry(root).champion().version == "v0002"


@pytest.mark.parametrize("command", ["promote", "cutover", "rollback"])
def test_the_bento_store_flag_is_one_plain_flag(command, monkeypatch, capsys):
    """Issue 31 item 9: a bool parameter named no_bento_store also offered --no-no-bento-store."""
    monkeypatch.setenv("COLUMNS", "250")
    assert main([command, "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--no-bento-store" in shown and "no-no-bento-store" not in shown


def test_rollback_without_the_bento_store_says_nothing_about_a_bento_model(tmp_path, capsys):
    root = tmp_path / "registry"
    args = ["--registry", str(root), "--no-bento-store"]
    assert main(["promote", str(_run(tmp_path, "first").root), *args]) == 0
    assert main(["promote", str(_run(tmp_path, "second").root), *args]) == 0
    capsys.readouterr()
    assert main(["rollback", *args]) == 0
    out = capsys.readouterr().out
    assert "rolled back: v0001 is the champion" in out and "bento" not in out


def test_promote_warns_when_the_version_carries_no_drift_reference(tmp_path, capsys):
    """Issue 31 item 6: a version promoted (or staged) without a drift reference was never monitored, and only
    the server's log said so."""
    root = tmp_path / "registry"
    args = ["--registry", str(root), "--no-bento-store"]
    bare = _run(tmp_path, "first")
    assert main(["promote", str(bare.root), *args]) == 0
    err = capsys.readouterr().err
    assert "warning: v0001 carries no drift reference" in err and "not monitor it for drift" in err
    staged = _run(tmp_path, "second")
    assert main(["promote", str(staged.root), *args, "--staged"]) == 0
    assert "warning: v0002 carries no drift reference" in capsys.readouterr().err
    with_reference = _run(tmp_path, "third")
    (with_reference.root / "reference").mkdir()
    (with_reference.root / "reference" / "reference.json").write_text("{}")
    assert main(["promote", str(with_reference.root), *args]) == 0
    assert "drift reference" not in capsys.readouterr().err
