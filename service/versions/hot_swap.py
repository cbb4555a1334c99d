"""Hot swap: follow the registry's champion pointer and switch the served model without dropping a request.

    holder = ModelHolder()
    watcher = ChampionWatcher(Registry("registry"), holder, load=lambda d: load_version(d, ...), metrics=metrics)
    watcher.check()                          # once at start-up (synchronously)
    await watcher.watch(poll_interval_s=5)   # then in the background

Every `check` reads champion.json (replaced atomically by promote/rollback, so it is never half-written). A new
version is loaded beside the serving one: manifest verified (every sha256), graph loaded, warm-up embed checked;
only then is `holder.current` replaced, one reference assignment. A request takes the reference once, when it
starts, and keeps it, so in-flight requests finish on the model they started with. A version that fails any step
is refused: logged, counted in embedgate_model_swap_failures_total, shown in /info, and the old one keeps serving.
It is tried again only when champion.json changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.model.serving_model import ServingModel
from service.registry.registry import Champion, Registry, verify_manifest

logger = logging.getLogger("embedgate.service")


class ModelHolder:
    """The one reference requests read. `swap` replaces it whole; nothing else mutates what it points to."""

    def __init__(self, not_ready_reason: str = "the service is starting: no model loaded yet") -> None:
        self.current: ServingModel | None = None
        self.not_ready_reason = not_ready_reason
        self.last_refusal: dict[str, Any] | None = None
        # Set when the served version's files no longer match its manifest: /ready answers 503 with it while the
        # loaded model keeps serving from memory (a restart would refuse those files).
        self.integrity_problem: str | None = None

    def swap(self, new: ServingModel) -> ServingModel | None:
        old, self.current = self.current, new  # readers see the old or the new object, never a mix
        self.integrity_problem = None  # the new model's files were verified as it loaded
        return old


@dataclass(frozen=True)
class SwapOutcome:
    action: str  # swapped | unchanged | refused | no_champion
    version: str | None
    detail: str = ""


class ChampionWatcher:
    """Loads the registry's champion into `holder` when it changes; refuses versions that fail to load."""

    def __init__(
        self,
        registry: Registry,
        holder: ModelHolder,
        load: Callable[[Path], ServingModel],
        metrics: Any | None = None,
        fetch: Callable[[str], Path] | None = None,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self._load = load
        # the version's local folder; on object storage the service passes VersionPool.fetch, which downloads only
        # what it serves (registry.version_dir would download every graph of the version)
        self._fetch = fetch or registry.version_dir
        self._metrics = metrics
        self._last_seen: Champion | None = None
        self.last_checked_at: float | None = None  # unix time of the last look at the pointer (/info)

    def check(self) -> SwapOutcome:
        """Look at the champion pointer once; load and switch to a new champion. Never raises."""
        self.last_checked_at = time.time()
        try:
            champion = self.registry.champion()
        except Exception as err:  # an unreadable pointer must not stop the serving model
            logger.error(
                "cannot read the champion pointer in %s: %s; still serving %s",
                self.registry.root,
                err,
                self._serving(),
            )
            return SwapOutcome("refused", None, str(err))
        if champion is None:
            if self.holder.current is None:
                self.holder.not_ready_reason = (
                    f"no champion in the registry {self.registry.root.resolve()} yet: promote a model "
                    f"(`embedgate promote RUN_DIR`); model routes answer 503 until one is loaded"
                )
            return SwapOutcome("no_champion", None)
        if champion == self._last_seen:
            return SwapOutcome("unchanged", champion.version)
        self._last_seen = champion
        current = self.holder.current
        if current is not None and current.version == champion.version:
            return SwapOutcome("unchanged", champion.version)
        return self._switch_to(champion.version)

    def _switch_to(self, version: str) -> SwapOutcome:
        try:
            model = self._load(self._fetch(version))
        except Exception as err:  # any failure to load (bad manifest, bad graph, I/O) refuses the version
            return self._refuse(version, err)
        old = self.holder.swap(model)
        self.holder.last_refusal = None
        if self._metrics is not None:
            self._metrics.swaps.labels(model.version).inc()
            self._metrics.record_model(model, old)
        logger.info(
            "now serving %s (%s, %s, dim %d; warm-up %.0f ms)%s",
            model.version,
            model.source,
            model.precision,
            model.serving_dim,
            model.warm_up_ms,
            f"; {old.version} finishes its in-flight requests" if old else "",
        )
        return SwapOutcome("swapped", model.version, f"from {old.version if old else 'nothing'}")

    def _refuse(self, version: str, err: Exception) -> SwapOutcome:
        reason = type(err).__name__
        detail = f"{reason}: {err}"
        self.holder.last_refusal = {"version": version, "reason": detail}
        if self.holder.current is None:
            self.holder.not_ready_reason = (
                f"the champion {version} could not be loaded ({detail}); fix or roll "
                f"back the registry (`embedgate rollback`)"
            )
        if self._metrics is not None:
            self._metrics.swap_failures.labels(version, reason).inc()
        logger.error(
            "refused champion %s from %s: %s; still serving %s",
            version,
            self.registry.root,
            detail,
            self._serving(),
        )
        return SwapOutcome("refused", version, detail)

    def _serving(self) -> str:
        current = self.holder.current
        return current.version if current else "nothing (not ready)"

    def reverify(self) -> str | None:
        """Hash the served version's files against its manifest again; record (and return) what no longer matches,
        or clear the record when they match again. Never raises, never unloads the model."""
        current = self.holder.current
        if current is None:
            return None
        try:
            verify_manifest(self._fetch(current.version))
        except (
            Exception
        ) as err:  # changed, missing, unreadable: all the same to a restart, which would refuse it
            problem = (
                f"the files of the served version {current.version} no longer match its manifest ({err}); "
                f"it keeps serving from memory, but a restart would refuse it: restore the files, or "
                f"promote or roll back to another version"
            )
            if problem != self.holder.integrity_problem:
                logger.error("%s", problem)
            self.holder.integrity_problem = problem
            return problem
        if self.holder.integrity_problem is not None:
            logger.info("the files of %s match their manifest again", current.version)
        self.holder.integrity_problem = None
        return None

    async def watch(self, poll_interval_s: float, verify_interval_s: float | None = None) -> None:
        """`check` every `poll_interval_s` seconds, and `reverify` every `verify_interval_s` (None: never), in a
        worker thread (loading a graph, or hashing it, takes a while)."""
        loop = asyncio.get_running_loop()
        last_verified = loop.time()
        while True:
            await asyncio.sleep(poll_interval_s)
            await loop.run_in_executor(None, self.check)
            if verify_interval_s is not None and loop.time() - last_verified >= verify_interval_s:
                await loop.run_in_executor(None, self.reverify)
                last_verified = loop.time()
