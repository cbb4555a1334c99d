"""Capture served texts for drift, off the request path: sample, enqueue, and let one writer thread do the rest.

    capture = DriftCapture.from_env()      # None when EMBEDGATE_DRIFT_SAMPLE_RATE=0
    capture.record(texts, vectors, token_counts, truncated, model_version="v0003", dim=384)   # enqueue only
    capture.close()                        # drain the queue, seal the open windows (one per version)

`record` costs one random draw per text and, for the sampled texts, a copy of their vectors and one non-blocking
`put` (benchmarks/drift_capture_overhead.py measures it against the embedding call). Descriptors, JSON and disk
happen on the writer thread. When the queue is full (the disk is slow, the writer is stuck) samples are dropped
and counted, never waited for; any error is counted and logged, never raised: drift is best effort, serving is not.

Why not `bentoml.monitor`: it logs each record synchronously through Python logging on the calling thread, into
files with no window or retention semantics, and would need 384 embedding columns per record. The same idea (a
sink for sampled request data) with a bounded queue, a writer thread and rolling windows fits here.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from service.drift.descriptors import describe_texts
from service.drift.settings import DriftSettings, DriftSettingsError
from service.drift.windows import CapturedRow, WindowWriter

logger = logging.getLogger("embedgate.drift")
_STOP = object()
# Log the first writer error and then every Nth, so a broken disk does not flood the log.
ERROR_LOG_EVERY = 1000


@dataclass(frozen=True)
class CaptureStats:
    """Counts since start: texts offered to `record`, sampled, written to windows, dropped (queue full), errors."""

    offered: int
    sampled: int
    written: int
    dropped: int
    errors: int
    queued: int
    windows_sealed: int
    windows_deleted: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DriftCapture:
    """Samples served texts into rolling window files; see the module docstring. Thread-safe `record`."""

    def __init__(self, settings: DriftSettings, seed: int | None = None) -> None:
        if settings.sample_rate <= 0:
            raise ValueError(
                "DriftCapture needs sample_rate > 0; with EMBEDGATE_DRIFT_SAMPLE_RATE=0 use "
                "DriftCapture.from_env(), which returns None"
            )
        self.settings = settings
        self._rate = settings.sample_rate
        self._rng = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("offered", "sampled", "written", "dropped", "errors"), 0)
        self._closed = False
        try:
            self._writer = _writer_for(settings)
        except OSError as err:
            raise DriftSettingsError(
                f"EMBEDGATE_DRIFT_DIR={settings.dir}: cannot create {settings.windows_dir} "
                f"({err.strerror or err}); point it at a writable folder, or set "
                f"EMBEDGATE_DRIFT_SAMPLE_RATE=0 to serve without drift capture"
            ) from None
        self._counters = _capture_counters()
        self._thread = threading.Thread(target=self._run, name="embedgate-drift-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DriftCapture | None:
        """A capture configured by `EMBEDGATE_DRIFT_*`, or None when the sample rate is 0 (capture off)."""
        settings = DriftSettings.from_env(environ)
        return cls(settings) if settings.sample_rate > 0 else None

    def record(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray,
        token_counts: Sequence[int],
        truncated: Sequence[bool],
        model_version: str,
        dim: int,
    ) -> None:
        """Sample some of `texts` and enqueue them with their vectors [len(texts), dim]. Never blocks, never
        raises; checks happen on the writer thread (a bad call is counted as an error there)."""
        try:
            if self._closed:
                return
            count = len(texts)
            if self._rate >= 1.0:
                picked = list(range(count))
            else:
                draw = self._rng.random
                picked = [index for index in range(count) if draw() < self._rate]
            self._add("offered", count)
            if not picked:
                return
            vectors = np.asarray(embeddings)
            if vectors.ndim != 2 or len(vectors) != count:
                raise ValueError("one vector per text expected")  # counted below; detail checks on the writer
            item = (
                time.time(),
                model_version,
                dim,
                [texts[i] for i in picked],
                vectors[picked],
                [token_counts[i] for i in picked],
                [truncated[i] for i in picked],
            )
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._add("dropped", len(picked))
                return
            self._add("sampled", len(picked))
        except Exception:  # the promise: a broken capture never breaks a request
            self._add("errors", 1)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until everything enqueued so far is written (tests, benchmarks, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def stats(self) -> CaptureStats:
        with self._lock:
            counts = dict(self._counts)
        return CaptureStats(
            **counts,
            queued=self._queue.qsize(),
            windows_sealed=self._writer.sealed_count,
            windows_deleted=self._writer.deleted_count,
        )

    def close(self, timeout_s: float = 10.0) -> CaptureStats:
        """Stop sampling, write what is queued, seal the open (partial) windows. Safe to call twice."""
        if not self._closed:
            self._closed = True
            try:
                self._queue.put(_STOP, timeout=timeout_s)
            except queue.Full:
                logger.warning(
                    "drift capture: the writer did not drain its queue in %.1f s; queued rows are lost",
                    timeout_s,
                )
            self._thread.join(timeout_s)
        return self.stats()

    # ---- the writer thread ----
    def _run(self) -> None:
        while True:
            try:
                # wake at least every flush interval: the writer's heartbeat keeps its open window its own
                item = self._queue.get(timeout=self.settings.flush_interval_s)
            except queue.Empty:
                self._tick()
                continue
            try:
                if item is _STOP:
                    break
                rows = _rows_from(*item, texts_mode=self.settings.texts)
                self._writer.append(rows)
                self._add("written", len(rows))
            except Exception as err:
                errors = self._add("errors", 1)
                if errors == 1 or errors % ERROR_LOG_EVERY == 0:
                    logger.warning(
                        "drift capture: could not write sampled rows (%s: %s); %d errors so far; "
                        "serving continues",
                        type(err).__name__,
                        err,
                        errors,
                    )
            finally:
                self._queue.task_done()
            self._tick()
        try:
            self._writer.close()
        except Exception as err:
            logger.warning("drift capture: could not seal the last window (%s: %s)", type(err).__name__, err)

    def _tick(self) -> None:
        try:
            self._writer.tick()
        except Exception as err:  # a store that is down for a moment: the next tick or append retries
            errors = self._add("errors", 1)
            if errors == 1 or errors % ERROR_LOG_EVERY == 0:
                logger.warning("drift capture: heartbeat failed (%s: %s)", type(err).__name__, err)

    def _add(self, name: str, amount: int) -> int:
        with self._lock:
            self._counts[name] += amount
            total = self._counts[name]
        counter = self._counters.get(name)
        if counter is not None:
            counter.inc(amount)
        return total


def _rows_from(
    when: float,
    model_version: str,
    dim: int,
    texts: list[str],
    vectors: np.ndarray,
    token_counts: list[int],
    truncated: list[bool],
    texts_mode: str = "keep",
) -> list[CapturedRow]:
    """Check one enqueued sample and turn it into rows (on the writer thread)."""
    if not isinstance(model_version, str) or not model_version:
        raise ValueError(f"model_version: expected a non-empty string, got {model_version!r}")
    if vectors.ndim != 2 or vectors.shape != (len(texts), dim):
        raise ValueError(
            f"embeddings: expected shape ({len(texts)}, {dim}) (texts x dim), got {vectors.shape}"
        )
    texts = [str(text) for text in texts]
    descriptors = describe_texts(texts, token_counts, truncated)
    vectors = vectors.astype(np.float32, copy=False)
    # The descriptors are computed: from here on the text is kept, hashed or dropped (EMBEDGATE_DRIFT_TEXTS).
    stored = [stored_text(text, texts_mode) for text in texts]
    return [
        CapturedRow(when, model_version, int(dim), row, vector, text)
        for row, vector, text in zip(descriptors, vectors, stored, strict=True)
    ]


def stored_text(text: str, mode: str) -> str | None:
    """What a window keeps of a served text: the text (keep), `sha256:<hex>` (hash) or nothing (drop)."""
    if mode == "keep":
        return text
    if mode == "hash":
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return None


def _writer_for(settings: DriftSettings) -> Any:
    """This process's window writer: into the drift folder, or onto the object store when it is a URL."""
    if settings.on_object_store:
        from service.drift.object_windows import object_writer_for  # lazy: obstore only for URLs

        return object_writer_for(settings)
    return WindowWriter(
        settings.windows_dir,
        settings.window_rows,
        settings.keep_windows,
        flush_interval_s=settings.flush_interval_s,
    )


def _capture_counters() -> dict[str, Any]:
    """Prometheus counters for the capture (shared by every capture in the process), or {} without the client."""
    try:
        from service.drift.gauges import capture_counters
    except ImportError:  # prometheus_client is absent: counts stay in stats()
        return {}
    return capture_counters()
