"""Several registry versions served at once: what `model` in a request resolves to, and which versions stay loaded.

    pool = VersionPool(Registry("registry"), load=load_version_partial, keep_versions=2, on_demand_bytes=1 << 30)
    pool.refresh()                                       # at start-up, then every poll (a worker thread)
    model = await pool.resolve("v0003", "embedgate-embedder", champion)   # ServingModel, or VersionNotFound

Names a client may send as `model`: omitted, the service name, `champion` -> the champion (the model the request
took when it started, so a hot swap never splits one request); `candidate` -> the staged version; `v0003` (or
`<service name>:v0003`) -> that immutable version, whatever is promoted later.

Memory: the champion, the candidate and the newest EMBEDGATE_KEEP_VERSIONS servable versions are kept loaded
("pinned"). Any other version is loaded on demand (manifest sha256 verified, warm-up embed checked, exactly as the
champion) and counted against EMBEDGATE_ON_DEMAND_MEMORY_MB by the size of the graph it loaded (onnxruntime holds
the weights once; activations are per batch); when a new one would not fit, the least recently used on-demand
versions are evicted. Requests that already hold an evicted model finish on it (it is freed after them).
Hand-written because no serving library we use (BentoML serves one model per service) keeps an LRU of versions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from service.errors import EmbedgateServiceError
from service.model.prompts import role_rows
from service.model.serving_model import ServingModel, serving_files
from service.registry.aliases import CANDIDATE, CHAMPION, AliasState, read_state
from service.registry.registry import VERSION_PATTERN, Registry
from service.versions.compat_spaces import (
    SEPARATOR,
    compat_files,
    newest_in_space,
    spaces_in_manifest,
    split_space,
)

logger = logging.getLogger("embedgate.service")


class VersionNotFound(EmbedgateServiceError):
    """`model` names no servable version or alias (404)."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available


class VersionUnavailable(EmbedgateServiceError):
    """The version exists but cannot be loaded now: over the memory bound, or it failed to load (503)."""


class VersionPool:
    def __init__(
        self,
        registry: Registry,
        load: Callable[[Path], ServingModel],
        keep_versions: int,
        on_demand_bytes: int,
        precision: str | None = None,
    ) -> None:
        self.registry = registry
        self._load = load
        # the precision `load` serves with: only its graph is fetched from object storage
        self.precision = precision
        self.keep_versions = keep_versions
        self.on_demand_bytes = on_demand_bytes
        self._lock = threading.Lock()  # guards the fields below; never held while a graph loads
        self._loaded: OrderedDict[str, ServingModel] = OrderedDict()  # least recently used first
        self._sizes: dict[str, int] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._pinned: frozenset[str] = frozenset()
        self._failed: dict[str, str] = {}  # version -> why its last load failed (not retried by refresh)
        # Keys of the LRU may also be "v0002@v0001" (a version in an older version's space: service/versions/compat_spaces.py),
        # loaded by `load_space(version_dir, space)`; a version's spaces never change (its manifest is immutable).
        self.load_space: Callable[[Path, str], ServingModel] | None = None
        self._spaces: dict[str, tuple[str, ...]] = {}
        self.state = AliasState(None, None, (), ())

    # ---- what is servable ----
    def refresh(self) -> None:
        """Re-read the aliases, drop retired versions, load the pinned ones. Never raises (a poll must not stop)."""
        try:
            state = read_state(self.registry)
        except Exception as err:
            logger.error(
                "cannot read the registry's aliases in %s: %s; keeping the last known",
                self.registry.root,
                err,
            )
            return
        pinned = {v for v in (state.champion, state.candidate) if v is not None}
        if self.keep_versions:
            pinned |= set(state.servable[-self.keep_versions :])
        with self._lock:
            self.state = state
            self._pinned = frozenset(pinned)
            for version in [v for v in self._loaded if split_space(v)[0] not in state.servable]:
                self._drop(version, "retired or removed")
        for version in sorted(pinned - set(self._loaded) - set(self._failed), key=lambda v: int(v[1:])):
            try:
                self.get(version)
            except Exception as err:  # logged; a request for it gets the reason
                logger.error("could not load %s to keep it ready: %s", version, err)
        with self._lock:
            self._evict(0)

    def _state_naming(self, version: str) -> AliasState:
        """The known state, re-read when it does not list `version` yet (promoted since the last poll)."""
        if version in self.state.servable:
            return self.state
        try:
            state = read_state(self.registry)
        except Exception:
            return self.state
        with self._lock:
            self.state = state
        return state

    def available(self) -> list[str]:
        return self.state.names()

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def pinned(self) -> frozenset[str]:
        return self._pinned

    # ---- loading ----
    def load_dir(self, version_dir: Path) -> ServingModel:
        """The champion watcher's loader: the pool's copy when loaded, else loaded (and kept) here. The champion
        is pinned at once: it never counts against the on-demand bound."""
        version = Path(version_dir).name
        with self._lock:
            self._pinned = self._pinned | {version}
        return self.get(version, verify_servable=False)

    def get(self, version: str, verify_servable: bool = True) -> ServingModel:
        """The loaded version (LRU touched), loading it first if needed. Blocking: call it in a worker thread."""
        with self._lock:
            model = self._touch(version)
            if model is not None:
                return model
            gate = self._loading.setdefault(version, threading.Lock())
        base, space = split_space(version)
        if verify_servable and base not in self._state_naming(base).servable:
            raise self._not_found(base)
        with gate:  # one load per version: concurrent requests for it wait for the same load
            with self._lock:
                model = self._touch(version)
                if model is not None:
                    return model
                estimate = _graph_bytes(self.registry.root / "versions" / base)
                if version not in self._pinned:
                    self._evict(estimate)
                    if self._on_demand_total() + estimate > self.on_demand_bytes:
                        raise VersionUnavailable(
                            f"{version} needs about {estimate / 2**20:.0f} MiB and the on-demand versions "
                            f"already hold {self._on_demand_total() / 2**20:.0f} MiB of "
                            f"EMBEDGATE_ON_DEMAND_MEMORY_MB={self.on_demand_bytes / 2**20:.0f}; retry shortly "
                            f"(versions in use are evicted when idle) or raise the bound"
                        )
            try:
                if space is None:
                    model = self._load(self.fetch(version))
                else:
                    if self.load_space is None:
                        raise VersionUnavailable(f"{version}: this service does not serve compatible spaces")
                    model = self.load_space(compat_files(self.registry, base, space, self.precision), space)
            except Exception as err:
                self._failed[version] = f"{type(err).__name__}: {err}"
                raise
            self._failed.pop(version, None)
            with self._lock:
                self._loaded[version] = model
                self._sizes[version] = _loaded_bytes(model, estimate)
                self._evict(0)
            logger.info(
                "loaded %s (%s, dim %d, %.0f MiB)%s",
                version,
                model.precision,
                model.serving_dim,
                self._sizes[version] / 2**20,
                "" if version in self._pinned else " on demand",
            )
            return model

    def fetch(self, version: str) -> Path:
        """The version's folder with the files serving it reads (on object storage only those are downloaded)."""
        return serving_files(self.registry, version, self.precision)

    def spaces(self, version: str) -> tuple[str, ...]:
        """The older versions whose spaces `version` answers in (from its manifest; cached: it never changes)."""
        if version not in self._spaces:
            try:
                self._spaces[version] = spaces_in_manifest(self.registry.manifest(version))
            except Exception as err:  # unreadable: none, and said once
                logger.warning("cannot read %s's compatible spaces: %s", version, err)
                self._spaces[version] = ()
        return self._spaces[version]

    def newest_in_space(self, upto: str, space: str) -> str | None:
        """The newest servable version up to `upto` that answers in `space` (the space's own version counts)."""
        return newest_in_space(self.state.servable, upto, space, self.spaces)

    def peek(self, version: str) -> ServingModel | None:
        with self._lock:
            return self._touch(version)

    def _touch(self, version: str) -> ServingModel | None:
        model = self._loaded.get(version)
        if model is not None:
            self._loaded.move_to_end(version)
        return model

    def _on_demand_total(self) -> int:
        return sum(size for version, size in self._sizes.items() if version not in self._pinned)

    def _evict(self, room: int) -> None:
        """Drop least recently used on-demand versions until `room` more bytes fit the bound (lock held)."""
        for version in [v for v in self._loaded if v not in self._pinned]:
            if self._on_demand_total() + room <= self.on_demand_bytes:
                return
            self._drop(version, "least recently used")

    def _drop(self, version: str, why: str) -> None:
        self._loaded.pop(version, None)
        self._sizes.pop(version, None)
        logger.info("unloaded %s (%s)", version, why)

    def _not_found(self, requested: str) -> VersionNotFound:
        state = self.state
        available = state.names()
        if requested in state.retired:
            why = f"version {requested} was retired"
        elif requested in state.never_served:
            why = (
                f"version {requested} was refused at its promotion (or its promotion was interrupted) and is "
                f"never served; `embedgate history` says why"
            )
        else:
            why = f"model {requested!r} is not served here"
        return VersionNotFound(
            f"{why}; ask for one of {available} (or omit model for the champion); GET /v1/models lists them",
            available,
        )

    # ---- requests ----
    async def resolve(self, requested: str | None, service_name: str, champion: ServingModel) -> ServingModel:
        """The model a request's `model` names; `champion` is what the request took when it started."""
        name = requested
        if name is not None and SEPARATOR in name:
            return await self._resolve_space(requested, service_name, champion)
        if name is None or name in (service_name, CHAMPION, f"{service_name}:{CHAMPION}"):
            return champion
        if name.startswith(f"{service_name}:"):
            name = name[len(service_name) + 1 :]
        if name == CANDIDATE:
            version = self.state.candidate or self._reread().candidate
            if version is None:
                raise VersionNotFound(
                    f"no version is staged as the candidate; ask for one of {self.available()}",
                    self.available(),
                )
        elif VERSION_PATTERN.match(name):
            version = name
        else:
            raise self._not_found(requested)
        if version == champion.version:
            return champion
        return await self._loaded_model(version)

    async def _loaded_model(self, key: str) -> ServingModel:
        """The model a pool key names (`v0003`, or `v0002@v0001`), loaded in a worker thread when it is not yet."""
        model = self.peek(key)
        if model is not None:
            return model
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.get, key)
        except (VersionNotFound, VersionUnavailable):
            raise
        except EmbedgateServiceError as err:  # bad manifest, bad graph: the version is refused, others serve
            raise VersionUnavailable(f"{key} could not be loaded: {err}") from err

    async def _resolve_space(self, requested: str, service_name: str, champion: ServingModel) -> ServingModel:
        """`<version or alias>@<old version>` (service/versions/compat_spaces.py)."""
        try:
            base, space = split_space(requested.removeprefix(f"{service_name}:"))
        except ValueError as err:
            raise VersionNotFound(str(err), self.available()) from None
        if base in (service_name, CHAMPION, CANDIDATE):
            if base == CANDIDATE:
                upto = self.state.candidate or self._reread().candidate
            else:
                upto = champion.version
            version = self.newest_in_space(upto, space) if upto else None
            if version is None:
                raise VersionNotFound(
                    f"no servable version up to {base} ({upto or 'none'}) answers in {space}'s space; ask for "
                    f"one of {self.available()}",
                    self.available(),
                )
        elif VERSION_PATTERN.match(base):
            version = base
        else:
            raise self._not_found(requested)
        if version == space:  # a version's own space is the version itself
            return await self.resolve(version, service_name, champion)
        if version not in self._state_naming(version).servable:
            raise self._not_found(version)
        loop = asyncio.get_running_loop()
        spaces = await loop.run_in_executor(None, self.spaces, version)
        if space not in spaces:
            raise VersionNotFound(
                f"{version} answers in no {space} space (its compatible spaces: {list(spaces)}); ask for "
                f"one of {self.available()}",
                self.available(),
            )
        return await self._loaded_model(f"{version}{SEPARATOR}{space}")

    def _reread(self) -> AliasState:
        with self._lock:
            self.state = read_state(self.registry)
            return self.state

    async def watch(self, poll_interval_s: float) -> None:
        """`refresh` every `poll_interval_s` seconds in a worker thread."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(poll_interval_s)
            await loop.run_in_executor(None, self.refresh)


def _graph_bytes(version_dir: Path) -> int:
    """Before loading: the largest graph in the version (the full-dim fp32 one), an upper bound on what loads."""
    sizes = (
        [path.stat().st_size for path in (version_dir / "onnx").rglob("*.onnx")]
        if version_dir.is_dir()
        else []
    )
    return max(sizes, default=0)


def _loaded_bytes(model: ServingModel, fallback: int) -> int:
    try:
        return os.path.getsize(model.embedder.info.graph_path)
    except OSError:
        return fallback


def list_versions(pool: VersionPool, created: int) -> list[dict]:
    """/v1/models rows after the service name: each alias (with the version it points to), then every servable
    version, with whether it is loaded now (an unloaded one answers its first request after a load). A loaded
    prompted model's rows are followed by its role names (`v0003:query`, service/model/prompts.py); an unloaded one's
    prompts are not known without loading it, which listing must not do."""
    state = pool.state
    with pool._lock:  # a snapshot, not `peek`: listing must not reorder the LRU
        models = dict(pool._loaded)
    loaded = set(models)
    spaces = [(version, space) for version in state.servable for space in pool.spaces(version)]
    rows = [
        {"id": alias, "object": "model", "created": created, "owned_by": "embedgate", "version": version}
        for alias, version in state.aliases().items()
    ]
    rows += [
        {
            "id": version,
            "object": "model",
            "created": created,
            "owned_by": "embedgate",
            "version": version,
            "loaded": version in loaded,
            "kept_loaded": version in pool.pinned(),
        }
        for version in state.servable
    ]
    rows += [
        {
            "id": f"{version}{SEPARATOR}{space}",
            "object": "model",
            "created": created,
            "owned_by": "embedgate",
            "version": version,
            "space": space,
            "loaded": f"{version}{SEPARATOR}{space}" in loaded,
        }
        for version, space in spaces
    ]
    with_roles = []
    for row in rows:
        model = models.get(row["id"] if "space" in row else row["version"])
        with_roles += [row, *role_rows(row, model.embedder.info.prompts if model else None)]
    return with_roles
