"""The model registry: immutable versions, an atomic champion pointer, and an append-only history.

    registry/
      versions/v0001/          a promoted version: onnx/ (graphs, tokenizer, embedder.json, export.json),
                               decision.json, reference/ (drift reference), manifest.json (sha256 of every file)
      champion.json            {"version": "v0002", "previous": "v0001", "updated_at": ...}  (os.replace'd)
      history.jsonl            one JSON line per promote / rollback / refusal, never rewritten
      .lock                    writers hold an exclusive flock; readers never block

Why these choices: a version is built in `versions/.tmp-*` and renamed into place only when complete, and the
champion pointer is replaced atomically afterwards, so a crash at any point leaves the old champion serving and no
half version visible. Readers verify a version's manifest before loading it, so a tampered or truncated file is
refused rather than served. Lives in `service` (not `gates`) because the service reads it; `gates` writes through
the same class.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import RegistryError
from service.registry.backend import backend_class, local_path_of
from service.storage.atomic_files import fsync_dir, sha256_of, write_json_atomic

VERSION_PATTERN = re.compile(r"^v(\d{4,})$")
MANIFEST = "manifest.json"
# Tests only: the name of a promotion step at which the process SIGKILLs itself (tests/service/test_registry_faults.py).
KILL_AT_ENV = "EMBEDGATE_TEST_KILL_AT"
RECONCILER = "embedgate (recorded at the next registry command)"
# History actions that put a version in front of clients (champion, candidate, or staged by name), and those that
# record a version stored but never served.
SERVED_ACTIONS = frozenset({"promote", "cutover", "rollback"})
NEVER_SERVED_ACTIONS = frozenset({"refused", "interrupted"})
logger = logging.getLogger("embedgate.registry")


class DuplicatePromotion(RegistryError):
    """The run is already a version of this registry (same run id, serving dim and precision)."""


class ChampionChanged(RegistryError):
    """Another writer moved the champion between this writer's read and its switch (a lost compare-and-swap)."""


def champion_changed_message(gated_against: str | None, now: Champion | None) -> str:
    return (
        f"the champion changed since the gate ran (it was {gated_against or 'none'}, it is now "
        f"{now.version if now else 'none'}): re-gate the run against the new champion"
    )


@dataclass(frozen=True)
class Champion:
    version: str
    previous: str | None
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "previous": self.previous, "updated_at": self.updated_at}


@dataclass(frozen=True)
class HistoryEntry:
    time: str
    action: str  # promote | rollback | refused | cutover | cutover_refused | retire | webhook_failed (service.registry.aliases)
    version: str | None
    from_version: str | None
    who: str
    reason: str
    forced: bool = False
    run_id: str | None = None
    metrics: dict | None = None
    # Which alias moved to `version` ("champion", or "candidate" for a staged promotion; None: no alias moved) and
    # whether clients holding vectors of `from_version` must re-embed (the embedding space or its dim changed).
    alias: str | None = None
    reembed_required: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json_line(cls, line: str) -> HistoryEntry:
        """One history line, checked: TypeError/ValueError saying what is wrong (unknown or missing fields, a
        field of the wrong type such as null where text is expected)."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        entry = cls(**data)
        for name in ("time", "action", "who", "reason"):
            if not isinstance(getattr(entry, name), str):
                raise TypeError(f"field {name!r} must be text, got {getattr(entry, name)!r}")
        for name in ("version", "from_version", "run_id"):
            if getattr(entry, name) is not None and not isinstance(getattr(entry, name), str):
                raise TypeError(f"field {name!r} must be text or null, got {getattr(entry, name)!r}")
        if not isinstance(entry.forced, bool) or not (
            entry.metrics is None or isinstance(entry.metrics, dict)
        ):
            raise TypeError("field 'forced' must be true/false and 'metrics' an object or null")
        if not (entry.alias is None or isinstance(entry.alias, str)) or entry.reembed_required not in (
            None,
            True,
            False,
        ):
            raise TypeError("field 'alias' must be text or null and 'reembed_required' true/false/null")
        return entry


def build_manifest(
    root: Path, extra: dict[str, Any] | None = None, skip_prefixes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The manifest format registry versions and run directories share: {**extra, "files": {relative path:
    {sha256, size}}}; manifest.json itself and files under `skip_prefixes` (root-relative) are left out."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(skip_prefixes):
            continue
        files[rel] = {"sha256": sha256_of(path), "size": path.stat().st_size}
    return {**(extra or {}), "files": files}


def verify_manifest(root: Path, ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Recompute every file's sha256; any missing, extra, resized or changed file -> RegistryError.
    `ignore`: root-relative files another tool adds beside the version (BentoML's model store writes model.yaml)."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise RegistryError(
            f"{root}: no {MANIFEST}; a registry version must carry its manifest (refusing to load)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = manifest["files"]
        if not isinstance(listed, dict) or not all(
            isinstance(m, dict) and {"sha256", "size"} <= set(m) for m in listed.values()
        ):
            raise TypeError("'files' must map each path to {sha256, size}")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise RegistryError(f"{manifest_path}: unreadable manifest ({err}); refusing to load") from None
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST}
    present -= ignore
    missing = sorted(set(listed) - present)
    extra = sorted(present - set(listed))
    if missing or extra:
        raise RegistryError(
            f"{root}: files do not match the manifest (missing: {missing[:5]}, unexpected: "
            f"{extra[:5]}); refusing to load"
        )
    for rel, meta in listed.items():
        path = root / rel
        if path.stat().st_size != meta["size"] or sha256_of(path) != meta["sha256"]:
            raise RegistryError(
                f"{path}: sha256 does not match the manifest (file changed after promotion); refusing to load"
            )
    return manifest


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _copy_file_synced(src: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


def _copy_tree_synced(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            _copy_file_synced(path, target)


class Registry:
    """A local folder (or `file://` URL); an object-store URL (`s3://bucket/prefix`) opens an ObjectRegistry."""

    def __new__(cls, root: str | Path, *args: Any, **kwargs: Any):
        # `Registry(location)` opens whichever backend the location names (service.registry.backend chooses)
        return super().__new__(backend_class(root) if cls is Registry else cls)

    def __init__(self, root: str | Path):
        self.root = local_path_of(root)

    # ---- reading (the service) ----
    @property
    def champion_path(self) -> Path:
        return self.root / "champion.json"

    @property
    def history_path(self) -> Path:
        return self.root / "history.jsonl"

    def champion(self) -> Champion | None:
        if not self.champion_path.is_file():
            return None
        try:
            data = json.loads(self.champion_path.read_text(encoding="utf-8"))
            return Champion(data["version"], data.get("previous"), data["updated_at"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise RegistryError(
                f"{self.champion_path}: unreadable champion pointer ({type(err).__name__}: {err}); "
                f'expected {{"version", "previous", "updated_at"}}: rewrite it by hand '
                f"(history.jsonl records which version was the champion last)"
            ) from None

    def version_dir(self, version: str) -> Path:
        if not VERSION_PATTERN.match(version or ""):
            raise RegistryError(f"invalid version {version!r}: expected v0001-style ids")
        path = self.root / "versions" / version
        if not path.is_dir():
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"version {version} not found in {self.root} (versions: {known})")
        return path

    def versions(self) -> list[str]:
        folder = self.root / "versions"
        if not folder.is_dir():
            return []
        return sorted(
            (p.name for p in folder.iterdir() if VERSION_PATTERN.match(p.name)), key=lambda v: int(v[1:])
        )

    def verify(self, version: str) -> dict[str, Any]:
        return verify_manifest(self.version_dir(version))

    def manifest(self, version: str) -> dict[str, Any]:
        """The version's manifest as stored (not re-verified; nothing is downloaded on object storage)."""
        return json.loads((self.version_dir(version) / MANIFEST).read_text(encoding="utf-8"))

    def fingerprint(self, version: str) -> str:
        """sha256 of the version's file listing (every path with its sha256 and size): the same model files give
        the same fingerprint in any registry, while another registry's v0001 gives another. A gate records its
        baseline's; promotion compares it with the champion's."""
        files = self.manifest(version)["files"]
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()

    def history(self) -> list[HistoryEntry]:
        """Every readable history entry, oldest first. A damaged line (not JSON, invalid UTF-8, a missing or null
        field) is skipped and described in `self.history_problems` (and the log): the champion pointer and the
        version manifests are the source of truth, so one bad line must not block `rollback`, the emergency path."""
        self.history_problems: list[str] = []
        if not self.history_path.is_file():
            return []
        entries = []
        for number, raw in enumerate(self.history_path.read_bytes().splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                entries.append(HistoryEntry.from_json_line(raw.decode("utf-8")))
            except (UnicodeDecodeError, ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
                problem = (
                    f"{self.history_path.name} line {number} skipped, not a history entry "
                    f"({type(err).__name__}: {str(err)[:120]}): {raw[:80]!r}"
                )
                self.history_problems.append(problem)
                logger.warning("%s", problem)
        return entries

    def served_versions(self, entries: list[HistoryEntry] | None = None) -> set[str]:
        """The versions the history says were promoted, cut over or rolled back to: only those may be served. A
        version stored but refused at the switch (a lost race: "refused") or left by a killed promotion
        ("interrupted") has no such line and is never served, listed or preloaded.

        When some history lines are damaged (`history_problems`), a served version's line may be among them, so
        the rule falls back to every version except those the history names as refused or interrupted.
        `entries`: the history, when the caller has just read it (`history_problems` is then that read's)."""
        entries = self.history() if entries is None else entries
        served = {entry.version for entry in entries if entry.action in SERVED_ACTIONS and entry.version}
        if self.history_problems:
            never = {e.version for e in entries if e.action in NEVER_SERVED_ACTIONS and e.version}
            served |= {version for version in self.versions() if version not in never}
        return served

    def never_served_reason(self, version: str) -> str | None:
        """Why `version` may not be served (refused at its promotion, or interrupted), or None when it may."""
        entries = self.history()
        if version in self.served_versions(entries):
            return None
        champion = self.champion()
        if champion is not None and champion.version == version:
            return None
        for entry in reversed(entries):
            if entry.version == version and entry.action in NEVER_SERVED_ACTIONS:
                return f"{version} was {entry.action} at its promotion ({entry.reason}) and was never served"
        return f"{version} was never promoted (no history line promotes it) and was never served"

    # ---- writing (gates: promotion and rollback) ----
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The writers' exclusive lock. Whoever takes it first repairs what a killed writer left: temp files and
        half-built versions are removed, and a champion switch or a version without its history line is recorded."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "versions").mkdir(exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self.repairs: list[str] = []
                self._cleanup_partial()
                self._reconcile_history()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def reconcile(self) -> list[str]:
        """Take the lock once to repair what an interrupted writer left (see `_locked`); returns what was done.
        For read commands (`embedgate history`), so that the history they print tells the truth."""
        if not self.root.is_dir():
            return []
        with self._locked():
            return list(self.repairs)

    def _reconcile_history(self) -> None:
        """A writer killed between the champion switch and its history line leaves a champion the history does not
        name; one killed between the version's rename and the switch leaves a version nobody recorded. Both get
        their line now, marked as recorded afterwards (`who`), from the pointer and the version's manifest."""
        entries = self.history()
        # a version refused at its switch (object storage: a lost compare-and-swap) is recorded by its refusal
        recorded = {
            entry.version for entry in entries if entry.action in ("promote", "interrupted", "refused")
        }
        champion = self.champion()
        last_switch = next((entry.version for entry in reversed(entries) if _moved_the_champion(entry)), None)
        for version in self.versions():
            if version in recorded or (champion is not None and version == champion.version):
                continue
            if self.history_problems:  # its line may be one of the damaged ones: do not guess
                continue
            # Never the champion and never recorded: the promotion stopped before its switch. Kept (it is
            # complete and verified), but recorded, so that nobody mistakes it for a served version.
            self._append_history(
                HistoryEntry(
                    _now(),
                    "interrupted",
                    version,
                    last_switch,
                    RECONCILER,
                    "promotion interrupted before the champion switch; never served",
                    run_id=self._manifest_field(version, "run_id"),
                )
            )
            self.repairs.append(f"{version}: promotion interrupted before the champion switch (recorded)")
        if champion is not None and champion.version != last_switch and champion.version in self.versions():
            action = unrecorded_switch_action(champion.version, entries)
            self._append_history(
                HistoryEntry(
                    _now(),
                    action,
                    champion.version,
                    champion.previous,
                    RECONCILER,
                    f"{action} interrupted after the champion switch, before its history line; recorded from "
                    f"champion.json ({champion.updated_at})",
                    run_id=self._manifest_field(champion.version, "run_id"),
                )
            )
            self.repairs.append(f"{champion.version}: {action} to the champion recorded after the fact")

    def _manifest_field(self, version: str, name: str) -> Any:
        try:
            return json.loads((self.root / "versions" / version / MANIFEST).read_text(encoding="utf-8")).get(
                name
            )
        except (OSError, ValueError, AttributeError):
            return None

    def _append_history(self, entry: HistoryEntry) -> None:
        with open(self.history_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry.to_dict(), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _next_version(self) -> str:
        existing = [int(v[1:]) for v in self.versions()]
        return f"v{(max(existing) + 1) if existing else 1:04d}"

    def _cleanup_partial(self) -> None:
        """Remove half-built versions and half-written pointers left by a crash (never visible: their names do not
        match v\\d+ / champion.json). Safe under the lock: every writer holds it while its temp files exist."""
        for path in (self.root / "versions").glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
            self.repairs.append(f"removed the half-built version {path.name}")
        for path in self.root.glob(".*.tmp-*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                self.repairs.append(f"removed the half-written {path.name}")

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
        expected_champion: str | None | object = ...,
    ) -> str:
        """Store `sources` ({name in version: file or folder}) as a new immutable version; optionally switch the
        champion to it. `alias` names the alias a staged promotion moves instead (recorded; service.registry.aliases moves
        it). `refuse_duplicate_run`: DuplicatePromotion when `run_id` is already a version with the same serving
        dim and precision. `expected_champion`: the champion the gate compared against (None: none, the gate
        compared against the base model; default: the one read when this call starts); another one at the switch
        -> ChampionChanged, recorded as a refusal naming the version that was stored but not served (and never
        served). A staged version (`make_champion=False`) is checked the same way. Returns the version id.

        The steps are the same on a folder and on object storage; the backend supplies `_locked` (a flock, or
        compare-and-swap on every pointer read inside it), `_store_version` (copy + rename, or upload + marker)
        and `_switch` (atomic rename, or If-Match on the champion's etag read here)."""
        who = who or _user()
        for name, src in sources.items():
            if not Path(src).exists():
                raise RegistryError(f"cannot promote: {src} ({name}) does not exist")
        with self._locked():
            current = self.champion()  # under the lock / the etag the switch is conditional on
            if refuse_duplicate_run and run_id is not None:
                self.refuse_duplicate(run_id, metadata)
            gated_against = (
                expected_champion if expected_champion is not ... else (current.version if current else None)
            )
            if (current.version if current else None) != gated_against:
                # refused before anything is stored; on object storage the switch below checks it again, since
                # another writer can still move the champion while this one uploads
                err = ChampionChanged(champion_changed_message(gated_against, current))
                self._append_history(
                    HistoryEntry(
                        _now(), "refused", None, gated_against, who, str(err), forced, run_id, metrics
                    )
                )
                raise err
            version = self._store_version(sources, {"created_at": _now(), "run_id": run_id, **metadata})
            _kill_point("version_visible")
            try:
                if (current.version if current else None) != gated_against:
                    raise ChampionChanged(champion_changed_message(gated_against, current))
                if make_champion:
                    self._switch(version, gated_against)
            except ChampionChanged as err:
                refused = HistoryEntry(
                    _now(), "refused", version, gated_against, who, str(err), forced, run_id, metrics
                )
                self._append_history(refused)
                raise
            _kill_point("champion_switched")
            # After the switch: a kill in between is repaired by the next locked command (_reconcile_history).
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
                    "champion" if make_champion else alias,
                    reembed_required,
                )
            )
            _kill_point("history_written")
            return version

    def _store_version(self, sources: dict[str, Path], fields: dict[str, Any]) -> str:
        """Copy the sources into versions/.tmp-*, write the manifest, rename into place (atomic); the version id."""
        version = self._next_version()
        staging = self.root / "versions" / f".tmp-{version}-{os.getpid()}"
        staging.mkdir()
        for name, src in sources.items():
            src = Path(src)
            if src.is_dir():
                _copy_tree_synced(src, staging / name)
            else:
                _copy_file_synced(src, staging / name)
        write_json_atomic(staging / MANIFEST, build_manifest(staging, {"version": version, **fields}))
        _kill_point("staged")
        final = self.root / "versions" / version
        os.rename(staging, final)  # atomic: the version appears complete or not at all
        fsync_dir(final.parent)
        return version

    def refuse_duplicate(self, run_id: str, metadata: dict[str, Any]) -> None:
        """DuplicatePromotion when `run_id` is already a served version with the same serving dim and precision."""
        same = ("serving_dim", "serve_precision")
        # interrupted before its switch, or (object storage) refused at the switch: a retry must go through
        never_served = {
            entry.version for entry in self.history() if entry.action in ("interrupted", "refused")
        }
        for version in self.versions():
            if self._manifest_field(version, "run_id") != run_id or version in never_served:
                continue
            if all(self._manifest_field(version, key) == metadata.get(key) for key in same):
                champion = self.champion()
                serving = champion is not None and champion.version == version
                raise DuplicatePromotion(
                    f"run {run_id} is already {version} of this registry (same serving dim and precision)"
                    + (
                        "; it is the champion now"
                        if serving
                        else f"; to serve it again: embedgate rollback --to {version}"
                    )
                )

    def read_pointer(self, name: str) -> bytes | None:
        """A small JSON pointer file at the registry root (aliases.json), or None when absent."""
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def write_pointer(self, name: str, payload: Any) -> None:
        """Replace a pointer file atomically (callers hold `_locked`)."""
        write_json_atomic(self.root / name, payload)

    @property
    def location(self) -> str:
        """Where the registry is, for messages (a folder here; a URL on object storage)."""
        return str(self.root)

    def _has_champion_pointer(self) -> bool:
        return self.champion_path.is_file()

    def _switch(self, version: str, previous: str | None) -> None:
        write_json_atomic(self.champion_path, Champion(version, previous, _now()).to_dict())

    def rollback(
        self,
        *,
        who: str | None = None,
        reason: str = "",
        to: str | None = None,
        allow_dim_change: bool = False,
    ) -> Champion:
        """Make the previous champion (or `to`) the champion again, with the guards a cutover has (servable, not
        retired, verified, no change of the default dim unless `allow_dim_change`): service.registry.aliases.rollback."""
        from service.registry.aliases import (
            rollback,  # aliases sits on the registry; one rollback, beside cutover
        )

        rollback(self, to=to, allow_dim_change=allow_dim_change, who=who, reason=reason)
        return self.champion()

    def previous_of(self, version: str) -> str | None:
        """The champion that `version` replaced when it was last promoted (None: the first, or not recorded)."""
        return self._previous_of(version)

    def _previous_of(self, version: str) -> str | None:
        """The champion that `version` replaced when it was last promoted (so repeated rollbacks walk back)."""
        for entry in reversed(self.history()):
            # a staged promotion (alias "candidate") did not replace a champion; its cutover did
            if (
                entry.version == version
                and entry.action in ("promote", "cutover")
                and entry.alias != "candidate"
            ):
                return entry.from_version
        return None

    def record_refusal(
        self, *, run_id: str | None, who: str | None, reason: str, metrics: dict | None = None
    ):
        with self._locked():
            current = self.champion()
            self._append_history(
                HistoryEntry(
                    _now(),
                    "refused",
                    None,
                    current.version if current else None,
                    who or _user(),
                    reason,
                    False,
                    run_id,
                    metrics,
                )
            )


def unrecorded_switch_action(version: str, entries: list[HistoryEntry]) -> str:
    """What a champion switch without its history event was, from the events before it: a first promotion of
    `version`, a cutover to a version staged earlier, or a rollback to one that was champion before."""
    promoted = [entry for entry in entries if entry.action == "promote" and entry.version == version]
    if not promoted:
        return "promote"
    return "cutover" if any(entry.alias not in (None, "champion") for entry in promoted) else "rollback"


def _moved_the_champion(entry: HistoryEntry) -> bool:
    """Whether a history line records a champion switch (a staged promotion moves only the candidate alias)."""
    if entry.action == "promote":
        return entry.alias in (None, "champion")
    return entry.action in ("rollback", "cutover")


def _kill_point(step: str) -> None:
    """Fault injection for tests: SIGKILL this process at `step` when EMBEDGATE_TEST_KILL_AT names it."""
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _user() -> str:
    try:
        return os.environ.get("EMBEDGATE_USER") or getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid-{os.getuid()}"
