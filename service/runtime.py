"""Everything one serving process holds: settings, the served model (hot-swapped), the batcher, limits, metrics,
and the drift capture. The BentoML service builds one in `__init__`; tests build one directly.

    runtime = ServingRuntime.create(ServeSettings.from_env())   # loads the champion (or records why not)
    await runtime.start()                                       # batcher + champion watcher
    ...
    await runtime.stop()

Where the model comes from: the registry at EMBEDGATE_REGISTRY (hot-swapped on promote/rollback) when that variable
is set or the folder exists; otherwise the BentoML model store's EMBEDGATE_MODEL_TAG (what a built Bento carries).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

from service.api.limits import ConcurrencyLimit
from service.api.metrics import ServiceMetrics
from service.batching.batch_plan import default_batch_tokens
from service.batching.batcher import MicroBatcher
from service.errors import EmbedgateServiceError
from service.model.serving_model import ServingModel, load_version
from service.registry.registry import Registry
from service.settings import ServeSettings
from service.versions.compat_spaces import load_compatible
from service.versions.hot_swap import ChampionWatcher, ModelHolder
from service.versions.version_pool import VersionPool

logger = logging.getLogger("embedgate.service")
FROM_ENV: Any = object()  # create()'s default for `drift`: ask the drift module (None switches capture off)


class ServingRuntime:
    def __init__(
        self,
        settings: ServeSettings,
        metrics: ServiceMetrics,
        holder: ModelHolder,
        watcher: ChampionWatcher | None,
        source: str,
        drift: Any | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.holder = holder
        self.watcher = watcher
        self.source = source
        self.drift = drift
        self.drift_monitor: Any = (
            None  # judges the captured windows; started with the runtime (registry mode)
        )
        self.batcher = MicroBatcher(
            settings.max_batch_size,
            settings.max_batch_delay_ms / 1000,
            metrics,
            max_batch_tokens=settings.max_batch_tokens or default_batch_tokens(_providers_or_cpu()),
        )
        self.concurrency = ConcurrencyLimit(settings.max_concurrent_requests)
        self._watch_task: asyncio.Task | None = None
        self.versions: VersionPool | None = None  # registry mode: the versions a request may pin (`model`)
        self._versions_task: asyncio.Task | None = None

    @classmethod
    def create(
        cls,
        settings: ServeSettings,
        metrics: ServiceMetrics | None = None,
        drift: Any = FROM_ENV,
        registry_chosen: bool | None = None,
    ) -> ServingRuntime:
        """Build the runtime and load the first model synchronously (so /ready is true as soon as it can be).
        `drift`: a DriftCapture, None for none, or FROM_ENV: `DriftCapture.from_env()` if that module is installed."""
        metrics = metrics or ServiceMetrics()
        holder = ModelHolder()
        if registry_chosen is None:
            registry_chosen = settings.registry_was_chosen()
        drift = _drift_capture_from_env() if drift is FROM_ENV else drift
        if registry_chosen or Path(str(settings.registry)).is_dir() or not _store_has(settings.model_tag):
            registry = Registry(settings.registry)
            load = functools.partial(load_version, precision=settings.precision, threads=settings.threads)
            # Every version (the champion too) is loaded through the pool, so a version is in memory once.
            versions = VersionPool(
                registry,
                load,
                settings.keep_versions,
                int(settings.on_demand_memory_mb * 2**20),
                precision=settings.precision,
            )
            versions.load_space = functools.partial(
                load_compatible, precision=settings.precision, threads=settings.threads
            )
            watcher = ChampionWatcher(
                registry, holder, load=versions.load_dir, metrics=metrics, fetch=versions.fetch
            )
            watcher.check()
            versions.refresh()
            runtime = cls(
                settings,
                metrics,
                holder,
                watcher,
                f"registry:{getattr(registry, 'url', None) or settings.registry.resolve()}",
                drift,
            )
            runtime.versions = versions
            return runtime
        runtime = cls(settings, metrics, holder, None, f"bentoml-model-store:{settings.model_tag}", drift)
        runtime._load_from_store()
        return runtime

    def _load_from_store(self) -> None:
        from service.versions.model_store import load_from_store

        try:
            model = load_from_store(
                self.settings.model_tag, precision=self.settings.precision, threads=self.settings.threads
            )
        except EmbedgateServiceError as err:
            self.holder.not_ready_reason = f"{self.settings.model_tag} could not be loaded: {err}"
            self.metrics.swap_failures.labels(self.settings.model_tag, type(err).__name__).inc()
            logger.error("not ready: %s", self.holder.not_ready_reason)
            return
        self.holder.swap(model)
        self.metrics.swaps.labels(model.version).inc()
        self.metrics.record_model(model, None)
        logger.info("serving %s from %s", model.version, model.source)

    @property
    def model(self) -> ServingModel | None:
        return self.holder.current

    async def start(self) -> None:
        self.batcher.start()
        if self.drift is not None and self.watcher is not None:
            # the registry's location (a folder, or its URL: the references are read through the verified cache)
            self.drift_monitor = _start_drift_monitor(self.drift.settings, self.watcher.registry.location)
        if self.watcher is not None:
            self._watch_task = asyncio.get_running_loop().create_task(
                self.watcher.watch(self.settings.poll_interval_s, self.settings.verify_interval_s),
                name="embedgate-champion-watcher",
            )
        if self.versions is not None:
            self._versions_task = asyncio.get_running_loop().create_task(
                self.versions.watch(self.settings.poll_interval_s), name="embedgate-version-pool"
            )

    async def stop(self) -> None:
        for task in (self._watch_task, self._versions_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.batcher.stop()
        if self.drift_monitor is not None:
            await asyncio.to_thread(self.drift_monitor.stop)
        if self.drift is not None:
            self.drift.close()


def _providers_or_cpu() -> list:
    """The providers the served graphs will run on ($EMBEDGATE_DEVICE), for the default batch budget. A device that
    cannot be had is reported by the model load itself, with its fix; here it only means the CPU's budget."""
    from service.model.devices import onnx_providers

    try:
        return onnx_providers()
    except EmbedgateServiceError:
        return ["CPUExecutionProvider"]


def _store_has(tag: str) -> bool:
    from service.versions.model_store import store_model_dir

    try:
        store_model_dir(tag)
    except EmbedgateServiceError:
        return False
    return True


def _start_drift_monitor(drift_settings: Any, registry_root: Any) -> Any:
    """The drift monitor's background thread, with the capture's settings (service.drift.monitor, docs/drift.md);
    None with EMBEDGATE_DRIFT_MONITOR=false (windows are then judged by a scheduled `embedgate drift`)."""
    from service.drift.monitor import DriftMonitor

    if not drift_settings.monitor:
        return None
    monitor = DriftMonitor(drift_settings, registry_root)
    monitor.start()
    return monitor


def _drift_capture_from_env() -> Any | None:
    """The drift monitor's capture, or None when it is switched off or not installed (serving works without)."""
    try:
        from service.drift.capture import DriftCapture
    except ImportError:
        return None
    return DriftCapture.from_env()
