"""Adaptive micro-batching: texts from concurrent requests share one model run.

    batcher = MicroBatcher(max_batch_size=32, max_delay_s=0.002)
    vectors = await batcher.embed(model, texts)      # full-dim unit vectors, one row per text, in order

Why our own and not BentoML's `@bentoml.api(batchable=True)`: a batchable BentoML API takes exactly one batched
argument, so per-request `dimensions`, `truncate` and the model version a request started on cannot ride along,
and its routes answer validation errors in BentoML's shape, not ours. Here one full-dim graph serves every dim, so
requests asking for different `dimensions` share a batch and each slices its own rows afterwards.

How a batch forms: when the worker is free it takes the oldest job, then waits until the batch holds
`max_batch_size` texts or `max_delay_s` has passed since that job arrived (no extra wait when it already queued
that long behind a running batch). Jobs bound to another model (a hot swap happened) wait for the next batch, so
a batch never mixes versions. One thread runs the graph at a time: onnxruntime already spreads one run over the
cores, and two concurrent runs would only compete for them. A request over `max_batch_size` texts is cut into
several jobs, so one large request cannot make everyone else wait for all of it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from service.serving_model import ServingModel


@dataclass
class _Job:
    model: ServingModel
    texts: Sequence[str]
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, max_batch_size: int, max_delay_s: float, metrics: Any | None = None) -> None:
        if max_batch_size < 1 or max_delay_s < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_delay_s >= 0, got {max_batch_size}, "
                             f"{max_delay_s}")
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._metrics = metrics
        self._pending: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedgate-model")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="embedgate-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, model: ServingModel, texts: Sequence[str]) -> np.ndarray:
        """Full-dim vectors for `texts` from `model`, computed in batches shared with other requests."""
        import numpy as np

        if self._worker is None or self._arrived is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        chunks = [texts[start : start + self.max_batch_size] for start in range(0, len(texts),
                                                                                    self.max_batch_size)]
        jobs = [_Job(model, chunk, loop.create_future()) for chunk in chunks]
        self._pending.extend(jobs)
        self._arrived.set()
        try:
            parts = [await job.future for job in jobs]
        finally:  # on timeout or cancellation, jobs not yet run are skipped by the worker
            for job in jobs:
                job.future.cancel()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _run(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather_more()
            batch = self._take_batch()
            if batch:
                await self._run_batch(loop, batch)

    async def _gather_more(self) -> None:
        """Wait for the batch to fill, until max_delay_s after the oldest job arrived."""
        assert self._arrived is not None
        deadline = self._pending[0].enqueued_at + self.max_delay_s
        while self._queued_texts() < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _queued_texts(self) -> int:
        first = self._pending[0].model
        return sum(len(job.texts) for job in self._pending if job.model is first and not job.future.done())

    def _take_batch(self) -> list[_Job]:
        """The oldest live jobs bound to the same model, up to max_batch_size texts; others stay queued."""
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()  # timed out or cancelled while waiting
        if not self._pending:
            return []
        model = self._pending[0].model
        batch, kept, size = [], deque(), 0
        while self._pending:
            job = self._pending.popleft()
            if job.future.done():
                continue
            if job.model is model and size + len(job.texts) <= self.max_batch_size:
                batch.append(job)
                size += len(job.texts)
            else:
                kept.append(job)
                if job.model is model:
                    break  # full: keep the queue's order for the rest
        kept.extend(self._pending)
        self._pending = kept
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        texts = [text for job in batch for text in job.texts]
        model = batch[0].model
        started = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(self._executor, self._embed, model, texts)
        except Exception as err:  # handed to each waiting request, which answers with an error
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        if self._metrics is not None:
            self._metrics.batch_duration.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(texts))
            self._metrics.batch_requests.observe(len(batch))
            for job in batch:
                self._metrics.queue_wait.observe(started - job.enqueued_at)
        offset = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(vectors[offset : offset + len(job.texts)])
            offset += len(job.texts)

    def _embed(self, model: ServingModel, texts: list[str]) -> np.ndarray:
        return model.embedder.embed(texts, batch_size=self.max_batch_size, truncate=True)
