"""The few object-store operations embedgate needs, over obstore, shared by the registry and the drift windows.

    store = open_store("s3://bucket/prefix", "EMBEDGATE_DRIFT_DIR")
    found = get(store, "champion.json")                  # (bytes, etag) or None
    create(store, "history/0001.json", b"...")           # If-None-Match: *; False when the key exists
    put_if(store, "champion.json", b"...", etag)         # If-Match: etag (None: create); None when it changed

Credentials and endpoint come only from the storage library's standard environment (AWS_ACCESS_KEY_ID,
AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, instance roles), never from an argument, so none reaches a log.
Why one module: the conditional writes are what every guarantee on object storage rests on (the registry's
compare-and-swap, a drift window that only one host may seal); they are written and tested once.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from service.errors import EmbedgateServiceError


def is_object_url(location: Any) -> bool:
    """True for `scheme://...` locations other than `file://` (a local folder is opened as a folder)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def open_store(url: str, what: str, error: type[EmbedgateServiceError] = EmbedgateServiceError) -> Any:
    """An obstore store for `url`; `what` names the setting or option in the error (no credentials in it)."""
    import obstore.store  # lazy: only object-store locations need it

    try:
        return obstore.store.from_url(url)
    except Exception as err:  # obstore raises its own config errors (unknown scheme, no bucket)
        raise error(
            f"cannot open {what} {url}: {err}; expected s3://bucket/prefix with credentials in the "
            f"standard environment (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT_URL for S3-compatible servers)"
        ) from None


# Tests only: SIGKILL this process just before its Nth write to an object store (tests/service/
# test_object_registry.py kills promotions at random points this way).
KILL_BEFORE_WRITE_ENV = "EMBEDGATE_TEST_KILL_BEFORE_WRITE"
_writes = 0


def _before_write() -> None:
    global _writes
    _writes += 1
    if os.environ.get(KILL_BEFORE_WRITE_ENV) == str(_writes):
        os.kill(os.getpid(), signal.SIGKILL)


def _lost() -> tuple[type[BaseException], ...]:
    from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

    # S3 answers 412 to a failed If-Match / If-None-Match, 404 to If-Match on a key that is gone; the local and
    # in-memory stores raise AlreadyExists / NotFound / FileExists instead.
    return AlreadyExistsError, PreconditionError, NotFoundError, FileExistsError, FileNotFoundError


def get(store: Any, key: str) -> tuple[bytes, str] | None:
    """The object's bytes and etag, or None when it does not exist."""
    import obstore
    from obstore.exceptions import NotFoundError

    try:
        result = obstore.get(store, key)
    except (NotFoundError, FileNotFoundError):
        return None
    return bytes(result.bytes()), result.meta["e_tag"]


def create(store: Any, key: str, payload: bytes) -> bool:
    """Create `key` only if absent (If-None-Match: *). False: it already exists."""
    return put_if(store, key, payload, None) is not None


def put_if(store: Any, key: str, payload: bytes, etag: str | None) -> str | None:
    """Replace `key` only if its etag is still `etag` (create it only if absent when `etag` is None); returns the
    new etag, or None when another writer changed (or removed, or created) it first."""
    import obstore

    mode: Any = "create" if etag is None else {"e_tag": etag}
    _before_write()
    try:
        return obstore.put(store, key, payload, mode=mode, use_multipart=False)["e_tag"] or ""
    except _lost():
        return None


def put(store: Any, key: str, payload: bytes | Path) -> str:
    """Write `key` unconditionally (a file is streamed; large ones go up in parts); returns its etag."""
    import obstore

    _before_write()
    return obstore.put(store, key, Path(payload) if isinstance(payload, Path) else payload)["e_tag"] or ""


def keys(store: Any, prefix: str) -> list[str]:
    """Every key under `prefix`, sorted."""
    return sorted(meta["path"] for meta in listing(store, prefix))


def listing(store: Any, prefix: str) -> list[dict[str, Any]]:
    """Every object's metadata (path, last_modified, size, e_tag) under `prefix`."""
    import obstore

    return [meta for batch in obstore.list(store, prefix=prefix) for meta in batch]


def delete(store: Any, key_or_keys: str | list[str]) -> None:
    """Delete; a key that is already gone is not an error (another writer removed it first)."""
    import obstore
    from obstore.exceptions import NotFoundError

    if not key_or_keys:
        return
    _before_write()
    with contextlib.suppress(NotFoundError, FileNotFoundError):
        obstore.delete(store, key_or_keys)
