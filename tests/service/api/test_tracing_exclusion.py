"""The embedding routes skip BentoML's OpenTelemetry middleware while tracing is not configured (it samples nothing
by default, yet built spans for every request: docs/serving.md, "Measured"); the other routes keep it, and a user's
own `tracing.excluded_urls` replaces ours. Checked on the configuration BentoML's worker builds its middleware
from, in a child process so this test run's BentoML configuration stays untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.service.serving import REPO_ROOT

_PROBE = """
import json
from bentoml._internal.configuration.containers import BentoMLContainer
from service.app import EmbedgateService
EmbedgateService.inject_config()   # what `bentoml serve`'s worker does before it builds the ASGI app
excluded = BentoMLContainer.tracing_excluded_urls.get()
urls = ["http://127.0.0.1:3000/v1/embeddings", "http://127.0.0.1:3000/embed", "http://127.0.0.1:3000/info",
        "http://127.0.0.1:3000/v1/models", "http://127.0.0.1:3000/embeddings-elsewhere"]
print(json.dumps({url: bool(excluded and excluded.url_disabled(url)) for url in urls}))
"""


def _excluded(extra_env: dict[str, str]) -> dict[str, bool]:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(REPO_ROOT), **extra_env}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_only_the_embedding_routes_skip_tracing_by_default():
    assert _excluded({}) == {
        "http://127.0.0.1:3000/v1/embeddings": True,
        "http://127.0.0.1:3000/embed": True,
        "http://127.0.0.1:3000/info": False,
        "http://127.0.0.1:3000/v1/models": False,
        "http://127.0.0.1:3000/embeddings-elsewhere": False,
    }


def test_a_users_excluded_urls_replace_ours_so_embedding_routes_can_be_traced():
    seen = _excluded({"BENTOML_CONFIG_OPTIONS": "services.embedgate.tracing.excluded_urls=/health"})
    assert seen["http://127.0.0.1:3000/v1/embeddings"] is False
    assert seen["http://127.0.0.1:3000/embed"] is False
