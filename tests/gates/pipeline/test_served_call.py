"""`embedgate demo`'s last step: a service that dies before it is ready is reported as such."""

from __future__ import annotations

import sys

import pytest

from gates.errors import EmbedgateGateError


def test_a_service_that_exits_before_ready_is_reported_with_its_code(tmp_path, monkeypatch):
    import gates.serve_process as serve
    from gates.pipeline.served_call import call_served_champion

    def exiting_service(**_):
        return [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], {}

    monkeypatch.setattr(serve, "serve_command", exiting_service)
    log = tmp_path / "serve.log"
    with pytest.raises(EmbedgateGateError, match=r"exited with code 3 before it was ready; see .*serve.log"):
        call_served_champion(tmp_path / "registry", ["a text"], startup_timeout_s=30, log_path=log)
    assert log.read_text().strip() == "boom"
