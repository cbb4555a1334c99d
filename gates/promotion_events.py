"""Promotion events a deployment can act on: each promotion, cutover and rollback, POSTed as signed JSON.

    EMBEDGATE_WEBHOOK_SECRET=... embedgate promote RUN_DIR --webhook https://ops.example/embedgate

The body is a JSON object (`event`, `version`, `previous`, `alias`, `reembed_required`, `serving_dim`, `registry`,
`time`, `delivery`); the header `X-Embedgate-Signature: sha256=<hex>` is the HMAC-SHA256 of the exact body bytes
with the secret, so a receiver checks `hmac.compare_digest(expected, received)` before trusting it. Delivery happens
after the registry has committed the move: it is retried with exponential backoff (tenacity) on connection errors,
timeouts, 429 and 5xx, and a delivery that still fails is recorded in the registry history (`webhook_failed`) and
reported; it never undoes or blocks the promotion itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.errors import EmbedgateGateError

SECRET_ENV = "EMBEDGATE_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Embedgate-Signature"
EVENT_HEADER = "X-Embedgate-Event"


class WebhookConfigError(EmbedgateGateError):
    """A webhook URL is set but cannot be used (bad URL, no secret): refused before anything is promoted."""


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: bytes
    attempts: int = 4
    backoff_s: float = 0.5  # waits 0.5, 1, 2 s between the attempts
    timeout_s: float = 5.0

    @classmethod
    def from_config(cls, url: str | None, secret_env: str = SECRET_ENV, **kwargs: Any) -> Webhook | None:
        """None when no URL is set; WebhookConfigError when the URL or the secret is unusable."""
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            raise WebhookConfigError(f"promotion webhook {url!r}: expected an http:// or https:// URL")
        secret = os.environ.get(secret_env, "")
        if not secret:
            raise WebhookConfigError(
                f"promotion webhook {url} is set but the environment variable {secret_env} "
                f"is empty: set it to the shared secret the receiver checks the HMAC "
                f"signature with (or unset the webhook)"
            )
        return cls(url, secret.encode("utf-8"), **kwargs)


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def build_event(
    event: str,
    registry: Path,
    *,
    version: str,
    previous: str | None,
    alias: str | None,
    reembed_required: bool | None,
    serving_dim: int | None,
    previous_dim: int | None = None,
    run_id: str | None = None,
    compatible_spaces: list[str] | None = None,
) -> dict[str, Any]:
    """`compatible_spaces`: the older versions whose stored vectors get this version's gain without re-embedding
    (clients query `<version>@<old version>`, docs/versions.md)."""
    return {
        "event": event,
        "version": version,
        "previous": previous,
        "alias": alias,
        "reembed_required": reembed_required,
        "serving_dim": serving_dim,
        "previous_dim": previous_dim,
        "run_id": run_id,
        "compatible_spaces": list(compatible_spaces or []),
        "registry": str(registry) if "://" in str(registry) else str(Path(registry).resolve()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "delivery": uuid.uuid4().hex,
    }


class _Retryable(Exception):
    pass


def deliver(webhook: Webhook, event: dict[str, Any]) -> str | None:
    """POST the signed event; None when the receiver answered 2xx, else why it failed (after the retries)."""
    import httpx
    from tenacity import RetryError, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    body = json.dumps(event, sort_keys=True).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(webhook.secret, body),
        EVENT_HEADER: event["event"],
        "X-Embedgate-Delivery": event["delivery"],
    }

    @retry(
        stop=stop_after_attempt(webhook.attempts),
        reraise=False,
        wait=wait_exponential(multiplier=webhook.backoff_s, max=30),
        retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
    )
    def post() -> httpx.Response:
        response = httpx.post(webhook.url, content=body, headers=headers, timeout=webhook.timeout_s)
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        return response

    try:
        response = post()
    except RetryError as err:
        cause = err.last_attempt.exception()
        return f"{webhook.attempts} attempts failed, last: {type(cause).__name__}: {cause}"
    if not response.is_success:
        return f"HTTP {response.status_code} (not retried): {response.text[:200]}"
    return None


def notify(webhook: Webhook | None, registry_root: Path, event: dict[str, Any]) -> str | None:
    """Deliver `event` when a webhook is configured; a failure is recorded in the history and returned."""
    if webhook is None:
        return None
    error = deliver(webhook, event)
    if error is not None:
        from service.registry.aliases import record_event
        from service.registry.registry import Registry

        record_event(
            Registry(registry_root),
            "webhook_failed",
            event["version"],
            f"{event['event']} event not delivered to {webhook.url}: {error}",
        )
    return error
