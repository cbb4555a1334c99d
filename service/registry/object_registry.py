"""The registry on object storage (S3, or anything that speaks S3's conditional writes): same guarantees, no locks.

    s3://bucket/prefix/
      blobs/<random>/onnx/...        a version's files, uploaded first (invisible until a marker names them)
      versions/v0003.json            the version marker = its manifest (sha256 + size of every file, `blobs` prefix),
                                     created with If-None-Match: * (two writers never claim the same number)
      champion.json                  {"version", "previous", "updated_at"}, replaced with If-Match: <etag read>
      aliases.json                   {"candidate", "retired"}, the same way (service.registry.aliases, inside `_locked`)
      history/<ns>-<random>.json     one object per event, created with If-None-Match: *, listed in key order

Why: object stores have no rename and no lock, but they have conditional writes (S3 since 2024; MinIO, R2 and
moto too). A version appears complete or not at all because its marker is written last; a promotion that read the
champion before its gate and finds it changed at the switch loses the compare-and-swap and is told to re-gate
(`ChampionChanged`); the history is never appended in place, so no event is lost to a concurrent writer.

Why obstore and not s3fs: s3fs needs aiobotocore -> botocore, which requires python-dateutil<3 while the lock
pins python-dateutil 4; obstore (the Rust `object_store` crate) installs beside it, reads the standard AWS_*
environment variables (credentials, AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP) and exposes both conditional
put modes, which s3fs does not. Readers download into a local cache and verify every sha256 before use
(`version_dir`), so the rest of the service reads ordinary files; a replica (`embedgate serve`) fetches only what
serving reads (service.model.serving_model.serving_files: one graph of the several a version holds, its tokenizer and
json, the drift reference), and a part asked for later is fetched then.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from service.errors import RegistryError
from service.registry.backend import is_object_url, local_path_of
from service.registry.registry import (
    MANIFEST,
    RECONCILER,
    VERSION_PATTERN,
    Champion,
    ChampionChanged,
    DuplicatePromotion,
    HistoryEntry,
    Registry,
    _kill_point,
    _moved_the_champion,
    _now,
    build_manifest,
    champion_changed_message,
    logger,
    unrecorded_switch_action,
)
from service.storage import object_store
from service.storage.atomic_files import sha256_of, write_json_atomic

CACHE_ENV = "EMBEDGATE_REGISTRY_CACHE"
VERSION_CLAIM_TRIES = 20
STALE_UPLOAD_S = 3600.0  # an upload untouched this long with no marker is a killed promotion's
RECORD_SWITCH_AFTER_S = 60.0  # a champion this long without its history event: its writer was killed


def _default_cache(url: str) -> Path:
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "embedgate" / "registry")
    return base / hashlib.sha256(url.encode()).hexdigest()[:16]


class ObjectRegistry(Registry):
    """`Registry` on an object-store URL. `root` is the local cache (versions/vNNNN, verified); `url` the store."""

    def __init__(self, url: str | Path, cache_dir: str | Path | None = None):
        self.url = str(url).rstrip("/")
        # credentials/endpoint: the standard AWS_* environment only
        self.store = object_store.open_store(self.url, "the registry", RegistryError)
        self.root = Path(cache_dir) if cache_dir else _default_cache(self.url)
        self.repairs: list[str] = []
        self._read_etags: dict[str, str | None] | None = None  # set inside `_locked`
        self._history_read: dict[str, HistoryEntry] = {}  # history events already read (immutable objects)

    @property
    def location(self) -> str:
        return self.url

    def _has_champion_pointer(self) -> bool:
        return self._get("champion.json") is not None

    def __repr__(self) -> str:
        return f"ObjectRegistry({self.url!r})"

    # ---- object helpers ----
    def _get(self, key: str) -> tuple[bytes, str] | None:
        return object_store.get(self.store, key)

    def _create(self, key: str, payload: bytes) -> bool:
        """Create `key` only if absent (If-None-Match: *). False: it already exists."""
        return object_store.create(self.store, key, payload)

    def _keys(self, prefix: str) -> list[str]:
        return object_store.keys(self.store, prefix)

    # ---- reading ----
    def _champion_with_etag(self) -> tuple[Champion | None, str | None]:
        found = self._get("champion.json")
        if found is None:
            return None, None
        raw, etag = found
        try:
            data = json.loads(raw)
            return Champion(data["version"], data.get("previous"), data["updated_at"]), etag
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise RegistryError(
                f"{self.url}/champion.json: unreadable champion pointer ({type(err).__name__}: "
                f'{err}); expected {{"version", "previous", "updated_at"}}'
            ) from None

    def champion(self) -> Champion | None:
        champion, etag = self._champion_with_etag()
        if self._read_etags is not None:  # inside `_locked`: the switch is conditional on this read
            self._read_etags.setdefault("champion.json", etag)
        return champion

    def versions(self) -> list[str]:
        names = (key.rsplit("/", 1)[-1].removesuffix(".json") for key in self._keys("versions/"))
        return sorted((n for n in names if VERSION_PATTERN.match(n)), key=lambda v: int(v[1:]))

    def _marker(self, version: str) -> dict[str, Any] | None:
        found = self._get(f"versions/{version}.json")
        if found is None:
            return None
        try:
            marker = json.loads(found[0])
            if not isinstance(marker.get("files"), dict) or not isinstance(marker.get("blobs"), str):
                raise TypeError("expected 'files' and 'blobs'")
            return marker
        except (ValueError, TypeError, AttributeError) as err:
            raise RegistryError(
                f"{self.url}/versions/{version}.json: unreadable version marker ({err}); refusing to load"
            ) from None

    def manifest(self, version: str) -> dict[str, Any]:
        marker = self._marker(version)
        if marker is None:
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"version {version} not found in {self.url} (versions: {known})")
        return marker

    def _manifest_field(self, version: str, name: str) -> Any:
        try:
            marker = self._marker(version)
        except RegistryError:
            return None
        return None if marker is None else marker.get(name)

    def version_dir(self, version: str, parts: Iterable[str] | None = None) -> Path:
        """The version's files in the local cache, each sha256-verified against the version's marker before it is
        placed. `parts`: path prefixes inside the version ("onnx/tokenizer/", "onnx/d384/model.onnx"); only the
        files they match are fetched, since a replica runs one graph of the several a version holds (None: every
        file). A part asked for later is fetched then. The cached manifest.json lists the files the cache holds
        (a subset of the marker's), so `verify_manifest` checks exactly those."""
        if not VERSION_PATTERN.match(version or ""):
            raise RegistryError(f"invalid version {version!r}: expected v0001-style ids")
        prefixes = _prefixes(parts)
        final = self.root / "versions" / version
        marker = _read_json(final.with_name(f".{version}.json"))
        if marker is not None and (final / MANIFEST).is_file() and _wanted(marker, prefixes) <= _held(final):
            return final  # verified when placed; the service re-verifies it every verify interval
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.with_name(f".{version}.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch per version at a time, across this host's processes
            self._fetch(version, prefixes, final)
        return final

    def _fetch(self, version: str, prefixes: tuple[str, ...] | None, final: Path) -> None:
        """Download what `prefixes` match and the cache lacks into a staging folder, verify each file, then move
        them into `final` and rewrite its manifest.json to list them (under the caller's lock)."""
        marker = self._cached_marker(version, final.with_name(f".{version}.json"))
        held = _held(final)
        missing = sorted(_wanted(marker, prefixes) - held)
        if not missing and (final / MANIFEST).is_file():
            return
        staging = final.with_name(f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            staging.mkdir()
            for rel in missing:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(self._verified_object(version, marker, rel))
            listed = {**marker, "files": {rel: marker["files"][rel] for rel in sorted(held | set(missing))}}
            manifest = (json.dumps(listed, indent=2) + "\n").encode()
            if not final.is_dir():  # the first fetch: the folder appears complete or not at all
                (staging / MANIFEST).write_bytes(manifest)
                os.rename(staging, final)
                return
            # A part fetched later: every file is verified before any is placed, and the manifest that lists them
            # replaces the old one right after, so a reader hashing the folder meanwhile sees at most a few renames.
            for rel in missing:
                (final / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, final / rel)
            (staging / MANIFEST).write_bytes(manifest)
            os.replace(staging / MANIFEST, final / MANIFEST)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _verified_object(self, version: str, marker: dict[str, Any], rel: str) -> bytes:
        """One file of the version, checked against the marker's size and sha256."""
        found = object_store.get(self.store, f"{marker['blobs']}/{rel}")
        if found is None:
            raise RegistryError(
                f"{self.url}/{marker['blobs']}/{rel} is missing although {version}'s marker lists it "
                f"(deleted by hand?); refusing to load {version}: roll back or promote another version"
            )
        expected = marker["files"][rel]
        data = found[0]
        if len(data) != expected.get("size") or hashlib.sha256(data).hexdigest() != expected.get("sha256"):
            raise RegistryError(
                f"{self.url}/{marker['blobs']}/{rel}: sha256 does not match the manifest of {version} (the "
                f"object changed after promotion); refusing to load {version}: roll back or promote another version"
            )
        return data

    def _cached_marker(self, version: str, path: Path) -> dict[str, Any]:
        """The version's marker: the local copy (markers are immutable), else read from the store and kept."""
        marker = _read_json(path)
        if marker is None:
            marker = self._marker(version)
            if marker is None:
                known = ", ".join(self.versions()) or "none"
                raise RegistryError(f"version {version} not found in {self.url} (versions: {known})")
            for rel in marker["files"]:
                if rel.startswith("/") or ".." in Path(rel).parts or rel == MANIFEST:
                    raise RegistryError(
                        f"{self.url}/versions/{version}.json lists {rel!r}; expected paths inside "
                        f"the version; refusing to load"
                    )
            write_json_atomic(path, marker)
        return marker

    def history(self) -> list[HistoryEntry]:
        """Every event, in key order. Each event object is created once and never rewritten, so the ones already
        read are kept: a serving replica polls the history (which versions may be served) with one listing and a
        GET per new event, not one per event ever written."""
        self.history_problems = []
        entries = []
        for key in self._keys("history/"):
            if key in self._history_read:
                entries.append(self._history_read[key])
                continue
            found = self._get(key)
            if found is None:
                continue
            try:
                entries.append(HistoryEntry.from_json_line(found[0].decode("utf-8")))
                self._history_read[key] = entries[-1]
            except (UnicodeDecodeError, ValueError, TypeError) as err:
                problem = f"{key} skipped, not a history entry ({type(err).__name__}: {str(err)[:120]})"
                self.history_problems.append(problem)
                logger.warning("%s", problem)
        return entries

    def reconcile(
        self, stale_after_s: float = STALE_UPLOAD_S, record_after_s: float = RECORD_SWITCH_AFTER_S
    ) -> list[str]:
        """Delete the blobs of uploads that no version marker names and that nothing has written to for
        `stale_after_s` (a promotion killed before its marker; a live upload is younger), and record a champion
        switch whose writer was killed before its history event (`_record_unrecorded_switch`). Nothing else needs
        repair: a version is visible only through its marker, written after its blobs."""
        named = {
            marker.get("blobs") for marker in (self._marker_or_none(v) for v in self.versions()) if marker
        }
        newest: dict[str, float] = {}
        for meta in object_store.listing(self.store, "blobs/"):
            prefix = "/".join(meta["path"].split("/")[:2])
            newest[prefix] = max(newest.get(prefix, 0.0), meta["last_modified"].timestamp())
        repairs = []
        for prefix, modified in sorted(newest.items()):
            if prefix in named or time.time() - modified < stale_after_s:
                continue
            keys = self._keys(prefix + "/")
            try:
                object_store.delete(self.store, keys)
            except Exception as err:  # read-only credentials (a replica's): leave it to a writer's command
                repairs.append(f"could not remove the interrupted upload {prefix} ({type(err).__name__})")
                continue
            repairs.append(f"removed {len(keys)} object(s) of an interrupted upload ({prefix})")
        try:
            repairs.extend(self._record_unrecorded_switch(record_after_s))
        except Exception as err:  # read-only credentials (a replica's): leave it to a writer's command
            repairs.append(f"could not record the champion's unrecorded switch ({type(err).__name__})")
        self.repairs = repairs
        return repairs

    def _record_unrecorded_switch(self, record_after_s: float) -> list[str]:
        """A writer killed between the champion switch and its history event leaves a champion the history does
        not name. Recorded once it has stayed so for `record_after_s` (a live writer writes its event within
        milliseconds of its switch). A marker named after the switch (repairs/, created with If-None-Match: *) is
        claimed first, so that several commands repairing at once record it exactly once."""
        champion = self.champion()
        if champion is None:
            return []
        try:
            switched = calendar.timegm(time.strptime(champion.updated_at, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            return []
        entries = self.history()
        last_switch = next((e for e in reversed(entries) if _moved_the_champion(e)), None)
        if (
            time.time() - switched < record_after_s
            or self.history_problems  # its event may be one of the damaged ones: do not guess
            or (last_switch is not None and last_switch.version == champion.version)
        ):
            return []
        action = unrecorded_switch_action(champion.version, entries)
        entry = HistoryEntry(
            _now(),
            action,
            champion.version,
            champion.previous,
            RECONCILER,
            f"{action} interrupted after the champion switch, before its history event; recorded from "
            f"champion.json ({champion.updated_at})",
            run_id=self._manifest_field(champion.version, "run_id"),
            alias="champion",
        )
        # The claim is a marker named after the switch (not the event: its key must sort after every event so far)
        claim = f"repairs/switch-{champion.version}-{switched}.json"
        if not self._create(claim, json.dumps(entry.to_dict(), sort_keys=True).encode()):
            return []  # another command recorded it first
        self._append_history(entry)
        return [f"{champion.version}: {action} to the champion recorded after the fact"]

    def _marker_or_none(self, version: str) -> dict[str, Any] | None:
        try:
            return self._marker(version)
        except RegistryError:
            return None

    # ---- writing ----
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """No lock on object storage: inside this block every pointer written (champion.json, aliases.json) is
        written only if it is still what was read in the block (If-Match on its etag, If-None-Match: * when it was
        absent), so a concurrent writer makes this one fail with a clear error instead of being overwritten."""
        self.repairs = []
        self._read_etags = {}
        try:
            yield
        finally:
            self._read_etags = None

    def read_pointer(self, name: str) -> bytes | None:
        found = self._get(name)
        if self._read_etags is not None:
            self._read_etags.setdefault(name, found[1] if found else None)
        return found[0] if found else None

    def write_pointer(self, name: str, payload: Any) -> None:
        self._put_if_unchanged(
            name,
            (json.dumps(payload, indent=2) + "\n").encode(),
            self._read_etag(name),
            f"{self.url}/{name} changed while this command ran (another writer); run it again",
        )

    def _read_etag(self, name: str) -> str | None:
        if self._read_etags is None or name not in self._read_etags:
            found = self._get(name)
            return found[1] if found else None
        return self._read_etags[name]

    def _put_if_unchanged(self, key: str, payload: bytes, etag: str | None, lost: str) -> None:
        if object_store.put_if(self.store, key, payload, etag) is None:
            raise RegistryError(lost)
        if self._read_etags is not None:
            self._read_etags.pop(key, None)  # a second write in the block reads the new etag

    def _switch(self, version: str, previous: str | None) -> None:
        """The champion switch of `cutover` (service.registry.aliases), conditional on the champion read in `_locked`."""
        self._switch_cas(version, previous, self._read_etag("champion.json"))

    def _append_history(self, entry: HistoryEntry) -> None:
        key = f"history/{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
        payload = json.dumps(entry.to_dict(), sort_keys=True).encode()
        if not self._create(key, payload):  # a random key never exists; if it does, something is very wrong
            raise RegistryError(f"{self.url}/{key} already exists; history keys must be unique")

    def _switch_cas(self, version: str, previous: str | None, etag: str | None) -> None:
        """Replace the champion only if it is still the one read (etag), or create it only if still absent."""
        payload = (json.dumps(Champion(version, previous, _now()).to_dict(), indent=2) + "\n").encode()
        if object_store.put_if(self.store, "champion.json", payload, etag) is None:
            raise ChampionChanged(champion_changed_message(previous, self._champion_with_etag()[0]))

    def _upload(self, sources: dict[str, Path], blobs: str) -> None:
        for name, src in sources.items():
            src = Path(src)
            files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
            for path in files:
                rel = name if path == src else f"{name}/{path.relative_to(src).as_posix()}"
                object_store.put(self.store, f"{blobs}/{rel}", path)

    def _claim_version(self, marker: dict[str, Any]) -> str:
        """Create the next free versions/vNNNN.json; a number taken by a concurrent writer -> the next one."""
        for _ in range(VERSION_CLAIM_TRIES):
            existing = [int(v[1:]) for v in self.versions()]
            version = f"v{(max(existing) + 1) if existing else 1:04d}"
            payload = json.dumps({**marker, "version": version}, indent=2, sort_keys=True).encode()
            if self._create(f"versions/{version}.json", payload):
                return version
        raise RegistryError(
            f"{self.url}: could not claim a version number after {VERSION_CLAIM_TRIES} tries "
            f"(many concurrent promotions?); retry"
        )

    def _store_version(self, sources: dict[str, Path], fields: dict[str, Any]) -> str:
        """Upload under a fresh blobs/ prefix, then claim the next number with the marker (its manifest, built from
        the local sources: the same files just uploaded; readers verify the downloaded copy)."""
        blobs = f"blobs/{uuid.uuid4().hex}"
        self._upload(sources, blobs)
        manifest = build_manifest_of_sources(sources)
        _kill_point("staged")
        return self._claim_version({**manifest, **fields, "blobs": blobs})


def fetched_dir(registry: Registry, version: str, parts: Iterable[str]) -> Path:
    """`registry.version_dir(version)` holding at least the files `parts` match: on object storage only those are
    fetched (and verified); a folder registry holds every file already."""
    if isinstance(registry, ObjectRegistry):
        return registry.version_dir(version, parts)
    return registry.version_dir(version)


def _prefixes(parts: Iterable[str] | None) -> tuple[str, ...] | None:
    if parts is None:
        return None
    if isinstance(parts, str):  # iterating it would give one-letter prefixes, matching nearly every file
        raise RegistryError(
            f"parts={parts!r}: expected a list of path prefixes inside the version, got one string; "
            f"pass [{parts!r}]"
        )
    return tuple(parts)


def _wanted(marker: dict[str, Any], prefixes: tuple[str, ...] | None) -> set[str]:
    """The marker's files that `prefixes` match (all of them for None)."""
    return {rel for rel in marker["files"] if prefixes is None or rel.startswith(prefixes)}


def _held(folder: Path) -> set[str]:
    """The files a cached version folder lists in its manifest.json (placed after verification)."""
    manifest = _read_json(folder / MANIFEST)
    files = manifest.get("files") if manifest else None
    return set(files) if isinstance(files, dict) else set()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build_manifest_of_sources(sources: dict[str, Path]) -> dict[str, Any]:
    """The manifest of the files `sources` would put in a version ({name in version: file or folder})."""
    files: dict[str, Any] = {}
    for name, src in sources.items():
        src = Path(src)
        if src.is_file():
            files[name] = {"sha256": sha256_of(src), "size": src.stat().st_size}
        else:
            files.update({f"{name}/{rel}": meta for rel, meta in build_manifest(src)["files"].items()})
    return {"files": dict(sorted(files.items()))}


__all__ = [
    "ChampionChanged",
    "DuplicatePromotion",
    "ObjectRegistry",
    "fetched_dir",
    "is_object_url",
    "local_path_of",
]
