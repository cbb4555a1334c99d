"""The judge's side of an object-store drift folder: a local copy to judge in, and one judge at a time.

    with judging(settings, wait=True) as mirror:       # None: another judge holds the lease (wait=False)
        ...judge the windows in settings.local_dir...  # pulled: windows/ (sealed), summaries/, workspace/
    # on leaving: new or changed summaries and workspace files pushed back, removed ones deleted

Why a local copy: the verdicts (summaries), the alert streak and the Evidently workspace are files that the rest
of the drift code (and the Evidently UI) read from a folder; sealed windows are immutable, so copying each once is
cheap, and the judge then runs exactly the code it runs on a folder. `.mirror.json` in the copy records each
object's etag and each pushed file's size and mtime, so a pass moves only what changed.

One judge at a time: the lease object `.run.lock` (created with If-None-Match: *, taken over with If-Match once
expired), because several replicas' monitors or an overlapping CronJob may start a pass at the same moment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.drift.errors import DriftError
from service.drift.object_windows import WINDOWS, seal_stale_parts
from service.drift.windows import SEALED_SUFFIX
from service.storage import object_store

RUN_LEASE_KEY = ".run.lock"
# Renewed every third of it while a pass runs, so a long pass keeps it; after a judge's crash, the next one waits
# at most this long.
RUN_LEASE_S = 300.0
INDEX = ".mirror.json"
PREFIXES = ("windows/", "summaries/", "workspace/")
logger = logging.getLogger("embedgate.drift")


class Mirror:
    """A local copy of some prefixes of the store, with the etags it was pulled at (see the module docstring)."""

    def __init__(self, store: Any, root: Path) -> None:
        self.store = store
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.repairs: list[str] = []  # stale open windows sealed by this judge
        try:
            self.index: dict[str, dict[str, Any]] = json.loads((self.root / INDEX).read_text("utf-8"))
        except (OSError, ValueError):
            self.index = {}  # a new or damaged copy: everything is pulled again

    def pull(self, prefix: str) -> int:
        """Download what is new or changed under `prefix`, delete what is gone there; returns files fetched."""
        remote = {
            meta["path"]: meta for meta in object_store.listing(self.store, prefix) if _mirrored(meta["path"])
        }
        fetched = 0
        for key, meta in sorted(remote.items()):
            path = self.root / key
            known = self.index.get(key)
            if known and known.get("etag") == meta["e_tag"] and path.is_file():
                continue
            found = object_store.get(self.store, key)
            if found is None:  # rotated away meanwhile
                continue
            _write_atomic(path, found[0])
            self._record(key, path, found[1])
            fetched += 1
        for key in [k for k in self.index if k.startswith(prefix) and k not in remote]:
            (self.root / key).unlink(missing_ok=True)
            del self.index[key]
        self.save()
        return fetched

    def push(self, prefix: str) -> int:
        """Upload the files under `prefix` written here since they were pulled or pushed; delete from the store
        those removed here (pruned summaries and snapshots); returns files uploaded."""
        folder = self.root / prefix
        local = {
            path.relative_to(self.root).as_posix(): path
            for path in (folder.rglob("*") if folder.is_dir() else [])
            if path.is_file() and not path.name.startswith(".")
        }
        uploaded = 0
        for key, path in sorted(local.items()):
            known, stat = self.index.get(key), path.stat()
            if known and (known.get("size"), known.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
                continue
            self._record(key, path, object_store.put(self.store, key, path))
            uploaded += 1
        gone = [key for key in self.index if key.startswith(prefix) and key not in local]
        object_store.delete(self.store, gone)
        for key in gone:
            del self.index[key]
        self.save()
        return uploaded

    def save(self) -> None:
        _write_atomic(self.root / INDEX, json.dumps(self.index, sort_keys=True).encode())

    def _record(self, key: str, path: Path, etag: str) -> None:
        stat = path.stat()
        self.index[key] = {"etag": etag, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _mirrored(key: str) -> bool:
    """Sealed windows only (open `.part` files are their writers'); everything else under the other prefixes."""
    return not key.startswith(WINDOWS) or key.endswith(SEALED_SUFFIX)


def _write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


class RunLease:
    """`.run.lock` on the store: held by one judge until it releases it or `lease_s` passes."""

    def __init__(self, store: Any, lease_s: float = RUN_LEASE_S) -> None:
        self.store = store
        self.lease_s = lease_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._etag: str | None = None

    def acquire(self, wait: bool, poll_s: float = 1.0) -> bool:
        while True:
            payload = json.dumps({"holder": self.holder, "expires_at": time.time() + self.lease_s}).encode()
            found = object_store.get(self.store, RUN_LEASE_KEY)
            if found is None or _expired(found[0]):
                self._etag = object_store.put_if(
                    self.store, RUN_LEASE_KEY, payload, None if found is None else found[1]
                )
                if self._etag is not None:
                    return True
                continue  # another judge took it first: look again
            if not wait:
                return False
            time.sleep(poll_s)

    def renew(self) -> bool:
        """Push the expiry out by a lease, only if this judge still holds it; False: it was taken over."""
        payload = json.dumps({"holder": self.holder, "expires_at": time.time() + self.lease_s}).encode()
        etag = object_store.put_if(self.store, RUN_LEASE_KEY, payload, self._etag)
        if etag is None:
            return False
        self._etag = etag
        return True

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Renew the lease every third of it on a background thread while the block runs (a long pass)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    if not self.renew():
                        logger.warning(
                            "drift judge: lost the run lease %s (another judge took it)", self.holder
                        )
                        return
                except Exception as err:  # the store is down for a moment: try again next time
                    logger.warning("drift judge: could not renew the run lease (%s)", type(err).__name__)

        thread = threading.Thread(target=renew, name="embedgate-drift-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        found = object_store.get(self.store, RUN_LEASE_KEY)
        if found is not None and found[1] == self._etag:  # never release a lease another judge took over
            object_store.delete(self.store, RUN_LEASE_KEY)
        self._etag = None


def _expired(payload: bytes) -> bool:
    try:
        return float(json.loads(payload)["expires_at"]) <= time.time()
    except (ValueError, KeyError, TypeError):
        return True  # unreadable: treat as a crashed holder's


@contextlib.contextmanager
def judging(settings: Any, wait: bool = True, snapshots: bool = True) -> Iterator[Mirror | None]:
    """Hold the run lease, seal stale open windows, pull the copy; push the verdicts back on leaving."""
    store = open_drift_store(settings)
    lease = RunLease(store)
    if not lease.acquire(wait):
        yield None
        return
    try:
        with lease.kept():
            mirror = Mirror(store, settings.local_dir)
            mirror.repairs = seal_stale_parts(store, settings.lease_s)
            prefixes = PREFIXES if snapshots else PREFIXES[:2]
            for prefix in prefixes:
                mirror.pull(prefix)
            yield mirror
            # windows/ too: nothing there changes locally, but windows past the retention period were deleted
            # here (service/drift/retention.py) and must go from the store as well
            for prefix in prefixes:
                mirror.push(prefix)
    finally:
        lease.release()


def pull_for_reading(settings: Any, prefixes: tuple[str, ...]) -> Mirror:
    """Refresh the local copy of `prefixes` for a reader (`embedgate drift --list`, the dashboard); no lease."""
    mirror = Mirror(open_drift_store(settings), settings.local_dir)
    for prefix in prefixes:
        mirror.pull(prefix)
    return mirror


def open_drift_store(settings: Any) -> Any:
    return object_store.open_store(str(settings.dir), "the drift folder (EMBEDGATE_DRIFT_DIR)", DriftError)
