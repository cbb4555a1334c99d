"""Aliases over the registry's immutable versions: `champion` (what `model` omitted means), `candidate` (a staged
promotion), retired versions, and the cutover that moves `champion` without breaking a client's stored vectors.

    registry/champion.json   the champion alias (written by Registry: promote, rollback, and cutover here)
    registry/aliases.json    {"candidate": "v0003" | null, "retired": ["v0001"], "updated_at": ...} (os.replace'd)

    cutover(Registry("registry"), "v0003")                       # champion -> v0003, recorded in history.jsonl
    cutover(Registry("registry"), "v0003", allow_dim_change=True) # when v0003's serving dim differs

Why a second file rather than more fields in champion.json: the service has always read champion.json alone, and
the hot-swap watcher compares it whole; the candidate and the retired list change without moving the champion.
Every write holds the registry's lock and replaces the file atomically, like the champion pointer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import RegistryError
from service.registry.registry import (
    VERSION_PATTERN,
    HistoryEntry,
    Registry,
    _now,
    _user,
)
from service.storage.atomic_files import sha256_of

CHAMPION = "champion"
CANDIDATE = "candidate"
ALIASES = (CHAMPION, CANDIDATE)
ALIASES_FILE = "aliases.json"


@dataclass(frozen=True)
class AliasState:
    """What a client can ask for: the aliases that point somewhere and every version that was served (promoted,
    staged, cut over or rolled back to) and not retired."""

    champion: str | None
    candidate: str | None
    retired: tuple[str, ...]
    servable: tuple[str, ...]  # version ids, oldest first
    # stored but never served (refused at the champion switch, or a killed promotion): 404, never loaded
    never_served: tuple[str, ...] = ()

    def aliases(self) -> dict[str, str]:
        return {
            name: version
            for name, version in ((CHAMPION, self.champion), (CANDIDATE, self.candidate))
            if version is not None
        }

    def names(self) -> list[str]:
        """Every name `model` may hold (besides the service name), for 404 messages."""
        return [*self.aliases(), *self.servable]


def _aliases_path(registry: Registry) -> Path:
    return registry.root / ALIASES_FILE


def _read_file(registry: Registry) -> dict[str, Any]:
    path = f"{registry.url}/{ALIASES_FILE}" if hasattr(registry, "url") else _aliases_path(registry)
    raw = registry.read_pointer(ALIASES_FILE)
    if raw is None:
        return {"candidate": None, "retired": []}
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("retired", []), list):
            raise TypeError("expected an object with 'candidate' (a version or null) and 'retired' (a list)")
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise RegistryError(
            f'{path}: unreadable aliases file ({err}); expected {{"candidate": "v0003" | null, '
            f'"retired": [...]}}: fix it by hand (history.jsonl records every move)'
        ) from None
    return {"candidate": data.get("candidate"), "retired": list(data.get("retired", []))}


def read_state(registry: Registry) -> AliasState:
    data = _read_file(registry)
    champion = registry.champion()
    retired = tuple(sorted(set(data["retired"])))
    current = {v for v in (champion.version if champion else None, data["candidate"]) if v is not None}
    served = current | registry.served_versions()
    versions = registry.versions()
    servable = tuple(v for v in versions if v in served and v not in retired)
    never_served = tuple(v for v in versions if v not in served and v not in retired)
    return AliasState(
        champion.version if champion else None, data["candidate"], retired, servable, never_served
    )


def _write_file(registry: Registry, candidate: str | None, retired: list[str]) -> None:
    registry.write_pointer(
        ALIASES_FILE, {"candidate": candidate, "retired": sorted(set(retired)), "updated_at": _now()}
    )


def embedding_space(onnx_dir: Path, serving_dim: int | None) -> tuple[tuple[str, ...], int | None]:
    """(sha256 of every exported graph, the default dim): two exports with the same pair return the same vectors
    for the same text, so moving an alias between them needs no re-embedding. The hashes come from embedder.json
    (written at export, verified against the manifest at load); an export without them is hashed here."""
    try:
        export = json.loads((onnx_dir / "embedder.json").read_text(encoding="utf-8"))
        hashes = tuple(
            sorted(entry["sha256"] for per_dim in export["graphs"].values() for entry in per_dim.values())
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        hashes = ()
    if not hashes:
        hashes = tuple(sorted(sha256_of(path) for path in onnx_dir.rglob("*.onnx")))
    return hashes, serving_dim


def version_space(registry: Registry, version: str) -> tuple[tuple[str, ...], int | None]:
    root = registry.version_dir(version)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    return embedding_space(root / "onnx", manifest.get("serving_dim"))


def reembed_required(registry: Registry, old: str | None, new: str) -> bool:
    """True when vectors of `old` cannot be compared with vectors of `new` (new encoder, or new default dim)."""
    if old is None or old == new:
        return False
    return version_space(registry, old) != version_space(registry, new)


def set_candidate(registry: Registry, version: str | None) -> None:
    """Point the `candidate` alias at `version` (None clears it). The version must exist and not be retired."""
    with registry._locked():  # the registry's writer lock: one writer at a time, readers never block
        data = _read_file(registry)
        if version is not None:
            registry.version_dir(version)
            if version in data["retired"]:
                raise RegistryError(f"{version} is retired; promote a new version instead")
            never_served = registry.never_served_reason(version)
            if never_served is not None:
                raise RegistryError(f"cannot stage {version}: {never_served}; promote its run again instead")
        _write_file(registry, version, data["retired"])


@dataclass(frozen=True)
class CutoverResult:
    version: str
    previous: str | None
    previous_dim: int | None
    serving_dim: int | None
    dim_changed: bool
    reembed_required: bool


class DimChangeRefused(RegistryError):
    """A champion move (cutover or rollback) would change the default `dimensions` without --allow-dim-change."""


class CutoverRefused(DimChangeRefused):
    """The cutover would change the champion's default `dimensions` and --allow-dim-change was not given."""


class RollbackRefused(DimChangeRefused):
    """The rollback would change the champion's default `dimensions` and --allow-dim-change was not given."""


def _dims(registry: Registry, current: str | None, version: str) -> tuple[int | None, int | None, bool, bool]:
    """(the champion's default dim, `version`'s, whether it changes, whether clients must re-embed)."""
    new_dim = version_space(registry, version)[1]
    old_dim = version_space(registry, current)[1] if current else None
    return (
        old_dim,
        new_dim,
        old_dim is not None and new_dim != old_dim,
        reembed_required(registry, current, version),
    )


def _refuse_dim_change(
    registry: Registry,
    action: str,
    version: str,
    current: str,
    old_dim: Any,
    new_dim: Any,
    who: str,
    reembed: bool,
) -> None:
    """Record `<action>_refused` and raise: cutover and rollback move the same alias, so they share one guard."""
    registry._append_history(
        HistoryEntry(
            _now(),
            f"{action}_refused",
            version,
            current,
            who,
            f"default dimensions would change {old_dim} -> {new_dim}; not allowed without --allow-dim-change",
            alias=CHAMPION,
            reembed_required=reembed,
        )
    )
    error = CutoverRefused if action == "cutover" else RollbackRefused
    raise error(
        f"{action} to {version} refused: the champion's default dimensions would change "
        f"from {old_dim} to {new_dim}, so clients that omit `dimensions` would get vectors "
        f"of another size. Re-embed with {version} at the new dim, then run again with "
        f"--allow-dim-change (recorded)"
    )


def cutover(
    registry: Registry,
    version: str,
    *,
    allow_dim_change: bool = False,
    who: str | None = None,
    reason: str = "",
) -> CutoverResult:
    """Move `champion` to `version` (verified first). A change of the default dim is refused (and recorded)
    unless `allow_dim_change`: clients that omit `dimensions` would otherwise get vectors of another size."""
    who = who or _user()
    if not VERSION_PATTERN.match(version or ""):
        raise RegistryError(
            f"cutover: expected a version id such as v0003, got {version!r} (see `embedgate history`)"
        )
    with registry._locked():
        data = _read_file(registry)
        registry.version_dir(version)  # RegistryError listing the versions when it does not exist
        if version in data["retired"]:
            raise RegistryError(f"cannot cut over to {version}: it is retired")
        never_served = registry.never_served_reason(version)
        if never_served is not None:
            raise RegistryError(
                f"cannot cut over to {version}: {never_served}; gate its run against the current champion "
                f"and promote it again (embedgate promote RUN_DIR --staged)"
            )
        current = registry.champion()
        if current is not None and current.version == version:
            raise RegistryError(f"{version} is already the champion")
        registry.verify(version)  # never point the alias at a version the service would refuse
        old_dim, new_dim, dim_changed, reembed = _dims(
            registry, current.version if current else None, version
        )
        if dim_changed and not allow_dim_change:
            _refuse_dim_change(registry, "cutover", version, current.version, old_dim, new_dim, who, reembed)
        registry._switch(version, current.version if current else None)
        if data["candidate"] == version:  # the candidate became the champion: nothing is staged any more
            _write_file(registry, None, data["retired"])
        note = f" (default dimensions {old_dim} -> {new_dim}, allowed)" if dim_changed else ""
        registry._append_history(
            HistoryEntry(
                _now(),
                "cutover",
                version,
                current.version if current else None,
                who,
                (reason or "cutover") + note,
                forced=dim_changed,
                alias=CHAMPION,
                reembed_required=reembed,
            )
        )
    return CutoverResult(
        version, current.version if current else None, old_dim, new_dim, dim_changed, reembed
    )


@dataclass(frozen=True)
class RollbackResult:
    version: str  # the champion now
    rolled_back_from: str  # the champion it replaced
    previous: str | None  # where a further `rollback` would go (None: `version` was the first champion)
    previous_dim: int | None  # the default dim before the move
    serving_dim: int | None
    dim_changed: bool
    reembed_required: bool


def rollback(
    registry: Registry,
    *,
    to: str | None = None,
    allow_dim_change: bool = False,
    who: str | None = None,
    reason: str = "",
) -> RollbackResult:
    """Move `champion` back to the champion the current one replaced (or to `to`), with cutover's guards: the
    version must be servable and not retired, it is verified first, and a change of the default dim is refused
    (and recorded) unless `allow_dim_change`. Rolling back to the candidate clears the candidate, as a cutover
    to it does."""
    who = who or _user()
    if not registry._has_champion_pointer():  # checked before the lock, which would create the folder
        raise RegistryError(
            f"nothing to roll back: {registry.location} has no champion yet (is --registry / "
            f"EMBEDGATE_REGISTRY the right folder?)"
        )
    with registry._locked():
        current = registry.champion()
        if current is None:
            raise RegistryError(f"nothing to roll back: {registry.location} has no champion yet")
        data = _read_file(registry)
        target = to or current.previous
        if target is None:
            others = [v for v in read_state(registry).servable if v != current.version]
            fix = (
                f"to serve another version, name it: embedgate rollback --to {others[-1]} (servable: "
                f"{', '.join(others)})"
                if others
                else "promote another version instead"
            )
            raise RegistryError(
                f"cannot roll back: {current.version} is the first champion (no champion before it); {fix}"
            )
        if target == current.version:
            raise RegistryError(f"{target} is already the champion")
        registry.version_dir(target)  # RegistryError listing the versions when it does not exist
        if target in data["retired"]:
            raise RegistryError(
                f"cannot roll back to {target}: it is retired (requests naming it get 404); roll back to a "
                f"servable version (embedgate history lists them)"
            )
        never_served = registry.never_served_reason(target)
        if never_served is not None:
            raise RegistryError(
                f"cannot roll back to {target}: {never_served}; roll back to a version that served "
                f"(embedgate history lists them)"
            )
        registry.verify(target)  # never switch to a version that would be refused at load
        old_dim, new_dim, dim_changed, reembed = _dims(registry, current.version, target)
        if dim_changed and not allow_dim_change:
            _refuse_dim_change(registry, "rollback", target, current.version, old_dim, new_dim, who, reembed)
        before = registry.previous_of(target)  # so that repeated rollbacks walk back the champions
        registry._switch(target, before)
        if data["candidate"] == target:  # the candidate is the champion now: nothing is staged any more
            _write_file(registry, None, data["retired"])
        note = f" (default dimensions {old_dim} -> {new_dim}, allowed)" if dim_changed else ""
        registry._append_history(
            HistoryEntry(
                _now(),
                "rollback",
                target,
                current.version,
                who,
                reason + note,
                forced=dim_changed,
                alias=CHAMPION,
                reembed_required=reembed,
            )
        )
    return RollbackResult(target, current.version, before, old_dim, new_dim, dim_changed, reembed)


def retire(registry: Registry, version: str, *, who: str | None = None, reason: str = "") -> None:
    """Stop serving `version` by name (404 from then on; the service unloads it at its next poll). Its files stay
    (versions are immutable and the history refers to them); the champion and the candidate cannot be retired."""
    with registry._locked():
        registry.version_dir(version)
        data = _read_file(registry)
        champion = registry.champion()
        if champion is not None and champion.version == version:
            raise RegistryError(f"cannot retire {version}: it is the champion; cut over or roll back first")
        if data["candidate"] == version:
            raise RegistryError(
                f"cannot retire {version}: it is the candidate; cut over to it or stage another"
            )
        _write_file(registry, data["candidate"], [*data["retired"], version])
        registry._append_history(
            HistoryEntry(_now(), "retire", version, None, who or _user(), reason or "retired")
        )


def record_event(registry: Registry, action: str, version: str | None, reason: str) -> None:
    """Append a line to the history (e.g. a failed webhook delivery) under the writer lock."""
    with registry._locked():
        registry._append_history(HistoryEntry(_now(), action, version, None, _user(), reason))
