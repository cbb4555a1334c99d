"""The registry on object storage (S3, or anything that speaks S3's conditional writes): same guarantees, no locks.

    s3://bucket/prefix/
      blobs/<random>/onnx/...        a version's files, uploaded first (invisible until a marker names them)
      versions/v0003.json            the version marker = its manifest (sha256 + size of every file, `blobs` prefix),
                                     created with If-None-Match: * (two writers never claim the same number)
      champion.json                  {"version", "previous", "updated_at"}, replaced with If-Match: <etag read>
      aliases.json                   {"candidate", "retired"}, the same way (service.aliases, inside `_locked`)
      history/<ns>-<random>.json     one object per event, created with If-None-Match: *, listed in key order

Why: object stores have no rename and no lock, but they have conditional writes (S3 since 2024; MinIO, R2 and
moto too). A version appears complete or not at all because its marker is written last; a promotion that read the
champion before its gate and finds it changed at the switch loses the compare-and-swap and is told to re-gate
(`ChampionChanged`); the history is never appended in place, so no event is lost to a concurrent writer.

Why obstore and not s3fs: s3fs needs aiobotocore -> botocore, which requires python-dateutil<3 while the lock
pins python-dateutil 4; obstore (the Rust `object_store` crate) installs beside it, reads the standard AWS_*
environment variables (credentials, AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP) and exposes both conditional
put modes, which s3fs does not. Readers (`embedgate serve`) download a version into a local cache and verify
every sha256 before use (`version_dir`), so the rest of the service reads ordinary files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.atomic_files import sha256_of
from service.errors import RegistryError
from service.registry import (
    MANIFEST,
    VERSION_PATTERN,
    Champion,
    DuplicatePromotion,
    HistoryEntry,
    Registry,
    _kill_point,
    _now,
    _user,
    build_manifest,
    logger,
    verify_manifest,
)

CACHE_ENV = "EMBEDGATE_REGISTRY_CACHE"
VERSION_CLAIM_TRIES = 20
STALE_UPLOAD_S = 3600.0  # an upload untouched this long with no marker is a killed promotion's


class ChampionChanged(RegistryError):
    """Another writer moved the champion between this writer's read and its switch (a lost compare-and-swap)."""


def is_object_url(location: str | Path) -> bool:
    """True for `scheme://...` locations other than `file://` (a local folder goes through the local registry)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path_of(location: str | Path) -> Path:
    """A local folder from a path or a `file://` URL."""
    text = str(location)
    return Path(text[len("file://") :]) if text.startswith("file://") else Path(location)


def _default_cache(url: str) -> Path:
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "embedgate" / "registry")
    return base / hashlib.sha256(url.encode()).hexdigest()[:16]


class ObjectRegistry(Registry):
    """`Registry` on an object-store URL. `root` is the local cache (versions/vNNNN, verified); `url` the store."""

    def __init__(self, url: str | Path, cache_dir: str | Path | None = None):
        import obstore.store  # lazy: only object-store registries need it

        self.url = str(url).rstrip("/")
        try:
            self.store = obstore.store.from_url(self.url)  # credentials/endpoint: the standard AWS_* env only
        except Exception as err:  # obstore raises its own config errors (unknown scheme, no bucket)
            raise RegistryError(
                f"cannot open the registry {self.url}: {err}; expected s3://bucket/prefix with "
                f"credentials in the standard environment (AWS_ACCESS_KEY_ID, AWS_REGION, "
                f"AWS_ENDPOINT_URL for S3-compatible servers)"
            ) from None
        self.root = Path(cache_dir) if cache_dir else _default_cache(self.url)
        self.repairs: list[str] = []
        self._read_etags: dict[str, str | None] | None = None  # set inside `_locked`

    @property
    def location(self) -> str:
        return self.url

    def _has_champion_pointer(self) -> bool:
        return self._get("champion.json") is not None

    def __repr__(self) -> str:
        return f"ObjectRegistry({self.url!r})"

    # ---- object helpers ----
    def _get(self, key: str) -> tuple[bytes, str] | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = obstore.get(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        return bytes(result.bytes()), result.meta["e_tag"]

    def _create(self, key: str, payload: bytes) -> bool:
        """Create `key` only if absent (If-None-Match: *). False: it already exists."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.store, key, payload, mode="create")
        except (AlreadyExistsError, PreconditionError, FileExistsError):
            return False
        return True

    def _keys(self, prefix: str) -> list[str]:
        import obstore

        keys = []
        for batch in obstore.list(self.store, prefix=prefix):
            keys.extend(meta["path"] for meta in batch)
        return sorted(keys)

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

    def _manifest_field(self, version: str, name: str) -> Any:
        try:
            marker = self._marker(version)
        except RegistryError:
            return None
        return None if marker is None else marker.get(name)

    def version_dir(self, version: str) -> Path:
        """The version's files in the local cache, downloaded once and sha256-verified against its marker."""
        import obstore

        if not VERSION_PATTERN.match(version or ""):
            raise RegistryError(f"invalid version {version!r}: expected v0001-style ids")
        final = self.root / "versions" / version
        if (final / MANIFEST).is_file():
            return final  # verified when it was placed; the service re-verifies it every verify interval
        marker = self._marker(version)
        if marker is None:
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"version {version} not found in {self.url} (versions: {known})")
        staging = final.with_name(f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            for rel in marker["files"]:
                if rel.startswith("/") or ".." in Path(rel).parts:
                    raise RegistryError(
                        f"{self.url}/versions/{version}.json lists {rel!r}; expected paths inside "
                        f"the version; refusing to load"
                    )
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bytes(obstore.get(self.store, f"{marker['blobs']}/{rel}").bytes()))
            (staging / MANIFEST).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            verify_manifest(staging)  # a changed or truncated object is refused before anything can load it
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, final)
            except OSError:  # another process of this host placed it first: same verified content
                if not (final / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def history(self) -> list[HistoryEntry]:
        self.history_problems = []
        entries = []
        for key in self._keys("history/"):
            found = self._get(key)
            if found is None:
                continue
            try:
                entries.append(HistoryEntry.from_json_line(found[0].decode("utf-8")))
            except (UnicodeDecodeError, ValueError, TypeError) as err:
                problem = f"{key} skipped, not a history entry ({type(err).__name__}: {str(err)[:120]})"
                self.history_problems.append(problem)
                logger.warning("%s", problem)
        return entries

    def reconcile(self, stale_after_s: float = STALE_UPLOAD_S) -> list[str]:
        """Delete the blobs of uploads that no version marker names and that nothing has written to for
        `stale_after_s` (a promotion killed before its marker; a live upload is younger). Nothing else needs
        repair: a version is visible only through its marker, written after its blobs."""
        import obstore

        named = {
            marker.get("blobs") for marker in (self._marker_or_none(v) for v in self.versions()) if marker
        }
        newest: dict[str, float] = {}
        for batch in obstore.list(self.store, prefix="blobs/"):
            for meta in batch:
                prefix = "/".join(meta["path"].split("/")[:2])
                newest[prefix] = max(newest.get(prefix, 0.0), meta["last_modified"].timestamp())
        repairs = []
        for prefix, modified in sorted(newest.items()):
            if prefix in named or time.time() - modified < stale_after_s:
                continue
            keys = self._keys(prefix + "/")
            try:
                obstore.delete(self.store, keys)
            except Exception as err:  # read-only credentials (a replica's): leave it to a writer's command
                repairs.append(f"could not remove the interrupted upload {prefix} ({type(err).__name__})")
                continue
            repairs.append(f"removed {len(keys)} object(s) of an interrupted upload ({prefix})")
        self.repairs = repairs
        return repairs

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
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: Any = "create" if etag is None else {"e_tag": etag}
        try:
            obstore.put(self.store, key, payload, mode=mode)
        except (AlreadyExistsError, PreconditionError, FileExistsError):
            raise RegistryError(lost) from None
        if self._read_etags is not None:
            self._read_etags.pop(key, None)  # a second write in the block reads the new etag

    def _switch(self, version: str, previous: str | None) -> None:
        """The champion switch of `cutover` (service.aliases), conditional on the champion read in `_locked`."""
        self._switch_cas(version, previous, self._read_etag("champion.json"))

    def _append_history(self, entry: HistoryEntry) -> None:
        key = f"history/{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
        payload = json.dumps(entry.to_dict(), sort_keys=True).encode()
        if not self._create(key, payload):  # a random key never exists; if it does, something is very wrong
            raise RegistryError(f"{self.url}/{key} already exists; history keys must be unique")

    def _switch_cas(self, version: str, previous: str | None, etag: str | None) -> None:
        """Replace the champion only if it is still the one read (etag), or create it only if still absent."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        payload = (json.dumps(Champion(version, previous, _now()).to_dict(), indent=2) + "\n").encode()
        mode: Any = "create" if etag is None else {"e_tag": etag}
        try:
            obstore.put(self.store, "champion.json", payload, mode=mode)
        except (AlreadyExistsError, PreconditionError, FileExistsError):
            now = self._champion_with_etag()[0]
            raise ChampionChanged(
                f"the champion changed since the gate ran (it was {previous or 'none'}, it is now "
                f"{now.version if now else 'none'}): re-gate the run against the new champion"
            ) from None

    def _upload(self, sources: dict[str, Path], blobs: str) -> None:
        import obstore

        for name, src in sources.items():
            src = Path(src)
            files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
            for path in files:
                rel = name if path == src else f"{name}/{path.relative_to(src).as_posix()}"
                obstore.put(self.store, f"{blobs}/{rel}", path)

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

    def add_version(
        self,
        sources: dict[str, Path],
        *,
        metadata: dict[str, Any],
        who: str | None = None,
        reason: str = "",
        forced: bool = False,
        run_id: str | None = None,
        metrics: dict | None = None,
        make_champion: bool = True,
        reembed_required: bool | None = None,
        alias: str | None = None,
        refuse_duplicate_run: bool = False,
        expected_champion: str | None = None,
    ) -> str:
        """Upload, verify, mark, then move the champion by compare-and-swap. `expected_champion`: the champion
        the gate compared against (default: the one read when this call starts); a different one -> ChampionChanged,
        recorded in the history as a refusal naming the version that was uploaded but not served."""
        who = who or _user()
        for name, src in sources.items():
            if not Path(src).exists():
                raise RegistryError(f"cannot promote: {src} ({name}) does not exist")
        current, etag = self._champion_with_etag()
        if refuse_duplicate_run and run_id is not None:
            self._refuse_duplicate(run_id, metadata)
        gated_against = (
            expected_champion if expected_champion is not None else (current.version if current else None)
        )
        blobs = f"blobs/{uuid.uuid4().hex}"
        self._upload(sources, blobs)
        # The manifest from the local sources (the same files just uploaded); readers verify the downloaded copy.
        manifest = build_manifest_of_sources(sources)
        _kill_point("staged")
        version = self._claim_version(
            {**manifest, "created_at": _now(), "run_id": run_id, "blobs": blobs, **metadata}
        )
        _kill_point("version_visible")
        if not make_champion:  # staged: the candidate alias moves afterwards (service.aliases.set_candidate)
            self._append_history(
                HistoryEntry(
                    _now(),
                    "promote",
                    version,
                    gated_against,
                    who,
                    reason,
                    forced,
                    run_id,
                    metrics,
                    alias,
                    reembed_required,
                )
            )
            return version
        try:
            if (current.version if current else None) != gated_against:
                raise ChampionChanged(
                    f"the champion changed since the gate ran (it was {gated_against or 'none'}, "
                    f"it is now {current.version if current else 'none'}): re-gate the run "
                    f"against the new champion"
                )
            self._switch_cas(version, gated_against, etag)
        except ChampionChanged as err:
            self._append_history(
                HistoryEntry(
                    _now(), "refused", version, gated_against, who, str(err), forced, run_id, metrics
                )
            )
            raise
        _kill_point("champion_switched")
        self._append_history(
            HistoryEntry(
                _now(),
                "promote",
                version,
                gated_against,
                who,
                reason,
                forced,
                run_id,
                metrics,
                "champion",
                reembed_required,
            )
        )
        _kill_point("history_written")
        return version


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


__all__ = ["ChampionChanged", "DuplicatePromotion", "ObjectRegistry", "is_object_url", "local_path_of"]
