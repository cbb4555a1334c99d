"""Continuous token-budget batching: texts from concurrent requests share model runs, grouped by length.

    batcher = MicroBatcher(max_batch_size=32, max_delay_s=0.0, max_batch_tokens=2048)
    vectors = await batcher.embed_tokens(model, encoded.ids)   # full-dim unit vectors, one row per text, in order
    vectors = await batcher.embed_tokens(model, encoded.ids, dimensions=128)    # Matryoshka-cut, re-normalised
    encoded, vectors = await batcher.embed_texts(model, texts, 128, check)      # tokenised in the model thread
    vectors = await batcher.embed(model, texts)                # tokenised on the caller's thread

Why our own and not BentoML's `@bentoml.api(batchable=True)`: a batchable BentoML API takes exactly one batched
argument, so per-request `dimensions`, `truncate` and the model version a request started on cannot ride along,
and its routes answer validation errors in BentoML's shape, not ours. Here one full-dim graph serves every dim, so
requests asking for different `dimensions` share a batch and each slices its own rows afterwards.

How a batch forms (as text-embeddings-inference does it): each text is one row, queued already tokenised (the
request tokenised it once, for its token limit and usage count). Whenever the model is free, the next batch is
planned from every queued row at once (service/batching/batch_plan.py): the row whose turn came first, plus rows of similar
length, within `max_batch_tokens` padded tokens and `max_batch_size` rows. Under load rows queue while a batch
runs, so batches fill without waiting; `max_delay_s` (default 0) may hold a batch that is not full yet for late
joiners. A row's turn is when it would finish if every queued request got an equal share of the model (processor
sharing, as weighted fair queueing schedules packets): its arrival, pushed back by the model time of its own
request's rows up to and including it (shortest first) times the number of requests queued. So a request of 64
documents, or three clients indexing back to back, cannot make a short query that arrives meanwhile wait for all
of their rows, a query queued beside a single passage goes first, and every row's turn comes in bounded time.
The model time per padded token is measured from the batches run so far.

Off the event loop (issue 26): a short request's texts are tokenised in the model's thread, all the requests
queued meanwhile in one `encode` call per model just before the batch is planned (`embed_texts`), and each batch's
rows are cut to their request's `dimensions` and re-normalised there too, one numpy call per dim instead of one per
request on the event loop. A request's `check` (its token limits) still runs on the event loop, before its rows
are queued, and its error is that request's answer.

Rows bound to another model (a hot swap happened) wait for the next batch, so a batch never mixes versions. One
thread runs the graph at a time: onnxruntime already spreads one run over the cores, and two concurrent runs
would only compete for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from service.batching.batch_plan import plan_batch
from service.model.embedder import truncate_dims
from service.model.tokenization import TokenizedTexts

if TYPE_CHECKING:
    import numpy as np

    from service.model.serving_model import ServingModel

# How quickly the estimate of model seconds per padded token follows new batches (an exponential average).
SECONDS_PER_TOKEN_SMOOTHING = 0.2


class _Request:
    """One caller's rows: their vectors fill in as batches finish; the future resolves with all of them."""

    __slots__ = (
        "model",
        "future",
        "vectors",
        "rows",
        "remaining",
        "enqueued_at",
        "dimensions",
        "texts",
        "check",
        "encoded",
    )

    def __init__(
        self, model: ServingModel, future: asyncio.Future, rows: int, dimensions: int | None = None
    ) -> None:
        self.model = model
        self.future = future
        self.vectors: np.ndarray | None = None
        self.rows = rows
        self.remaining = rows
        self.enqueued_at = time.perf_counter()
        self.dimensions = dimensions  # None: the graph's full dim
        self.texts: Sequence[str] = ()  # embed_texts: tokenised by the worker before its rows are queued
        self.check: Callable[[TokenizedTexts], None] | None = None
        self.encoded: TokenizedTexts | None = None


class _Row:
    __slots__ = ("request", "index", "ids", "turn")

    def __init__(self, request: _Request, index: int, ids: Sequence[int], turn: float) -> None:
        self.request = request
        self.index = index
        self.ids = ids
        self.turn = turn


class MicroBatcher:
    def __init__(
        self,
        max_batch_size: int,
        max_delay_s: float = 0.0,
        metrics: Any | None = None,
        max_batch_tokens: int = 2048,
    ) -> None:
        if max_batch_size < 1 or max_delay_s < 0 or max_batch_tokens < 1:
            raise ValueError(
                f"max_batch_size and max_batch_tokens must be >= 1 and max_delay_s >= 0, got "
                f"{max_batch_size}, {max_batch_tokens}, {max_delay_s}"
            )
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_delay_s = max_delay_s
        self._metrics = metrics
        self._rows: list[_Row] = []
        self._untokenized: list[_Request] = []  # embed_texts callers whose texts the worker tokenises next
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._seconds_per_token = 0.0  # measured from finished batches; 0 until the first one

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
        for request in [row.request for row in self._rows] + self._untokenized:
            if not request.future.done():
                request.future.set_exception(RuntimeError("the service is shutting down"))
        self._rows.clear()
        self._untokenized.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, model: ServingModel, texts: Sequence[str]) -> np.ndarray:
        """Full-dim vectors for `texts` from `model` (tokenised here, truncating), batched with other requests."""
        return await self.embed_tokens(model, model.embedder.encode(texts, truncate=True).ids)

    async def embed_texts(
        self,
        model: ServingModel,
        texts: Sequence[str],
        dimensions: int | None = None,
        check: Callable[[TokenizedTexts], None] | None = None,
    ) -> tuple[TokenizedTexts, np.ndarray]:
        """`texts` tokenised (truncating) in the model's thread with the other requests queued meanwhile, passed to
        `check` on the event loop (what it raises is raised here, and nothing is embedded), then embedded as
        `embed_tokens` does. Returns the tokenisation and the vectors [len(texts), dimensions or full dim]."""
        self._check_started()
        if not texts:
            raise ValueError("embed_texts needs at least one text, got none")
        request = _Request(model, asyncio.get_running_loop().create_future(), len(texts), dimensions)
        request.texts, request.check = texts, check
        self._untokenized.append(request)
        assert self._arrived is not None
        self._arrived.set()
        try:
            vectors = await request.future
        finally:
            request.future.cancel()
        assert request.encoded is not None
        return request.encoded, vectors

    async def embed_tokens(
        self, model: ServingModel, ids: Sequence[Sequence[int]], dimensions: int | None = None
    ) -> np.ndarray:
        """Vectors for rows already tokenised by `model.embedder.encode`, in order, batched with others: full-dim,
        or cut to `dimensions` and re-normalised (Matryoshka, `truncate_dims`)."""
        self._check_started()
        if not ids:
            raise ValueError("embed_tokens needs at least one row of token ids, got none")
        request = _Request(model, asyncio.get_running_loop().create_future(), len(ids), dimensions)
        self._queue_rows(request, ids)
        try:
            return await request.future
        finally:  # on timeout or cancellation, rows not yet run are dropped by the worker
            request.future.cancel()

    def _check_started(self) -> None:
        if self._worker is None or self._arrived is None:
            raise RuntimeError("MicroBatcher.start() was not called")

    def _queue_rows(self, request: _Request, ids: Sequence[Sequence[int]]) -> None:
        assert self._arrived is not None
        # Shortest rows first, each turn its virtual finish time under processor sharing (weighted fair queueing):
        # its arrival, pushed back by the model time of the request's rows up to and including it, times the
        # requests sharing the model. Finish rather than start times, so that of two one-text requests queued
        # together the short one goes first (a query is not stuck behind a passage that arrived 1 ms earlier),
        # while a long row's turn still comes in bounded time.
        sharing = 1 + len({id(row.request) for row in self._rows})
        turn = request.enqueued_at
        for index in sorted(range(len(ids)), key=lambda row: len(ids[row])):
            turn += len(ids[index]) * self._seconds_per_token * sharing
            self._rows.append(_Row(request, index, ids[index], turn))
        self._arrived.set()

    async def _run(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._untokenized:
                await self._tokenize_queued(loop)
            self._drop_abandoned()
            if not self._rows:
                if not self._untokenized:
                    self._arrived.clear()
                    await self._arrived.wait()
                continue
            batch = self._plan()
            if self.max_delay_s > 0 and not self._is_full(batch):
                await self._wait_for_more(batch)
                batch = self._plan()
            if batch:
                await self._run_batch(loop, batch)

    async def _tokenize_queued(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tokenise every queued embed_texts request in the model's thread (one call per model), check each on the
        event loop, and queue the rows of those that pass."""
        queued = [request for request in self._untokenized if not request.future.done()]
        self._untokenized = []
        if not queued:
            return
        results = await loop.run_in_executor(self._executor, _tokenize, queued)
        for request, result in zip(queued, results, strict=True):
            if request.future.done():
                continue
            try:
                if isinstance(result, Exception):
                    raise result
                if request.check is not None:
                    request.check(result)
            except Exception as err:  # this request's answer (a 422); the others go on
                request.future.set_exception(err)
                continue
            request.encoded = result
            self._queue_rows(request, result.ids)

    def _drop_abandoned(self) -> None:
        if any(row.request.future.done() for row in self._rows):  # timed out or cancelled while queued
            self._rows = [row for row in self._rows if not row.request.future.done()]

    def _plan(self) -> list[_Row]:
        """The next batch: rows of the model whose turn came first (a batch never mixes versions)."""
        self._drop_abandoned()
        if not self._rows:
            return []
        first = min(self._rows, key=lambda row: row.turn)
        candidates = [row for row in self._rows if row.request.model is first.request.model]
        chosen = plan_batch(
            [len(row.ids) for row in candidates],
            [row.turn for row in candidates],
            self.max_batch_tokens,
            self.max_batch_size,
        )
        batch = [candidates[index] for index in chosen]
        taken = set(map(id, batch))
        self._rows = [row for row in self._rows if id(row) not in taken]
        return batch

    def _is_full(self, batch: list[_Row]) -> bool:
        longest = max(len(row.ids) for row in batch)
        return len(batch) >= self.max_batch_size or (len(batch) + 1) * longest > self.max_batch_tokens

    async def _wait_for_more(self, batch: list[_Row]) -> None:
        """Put the planned rows back and wait until max_delay_s after the oldest arrived, or for more rows."""
        assert self._arrived is not None
        self._rows.extend(batch)
        deadline = min(row.request.enqueued_at for row in batch) + self.max_delay_s
        remaining = deadline - time.perf_counter()
        if remaining > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Row]) -> None:
        import numpy as np

        model = batch[0].request.model
        started = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(
                self._executor,
                self._embed_cut,
                model,
                [row.ids for row in batch],
                [row.request.dimensions for row in batch],
            )
        except Exception as err:  # handed to each waiting request, which answers with an error
            for row in batch:
                if not row.request.future.done():
                    row.request.future.set_exception(err)
            return
        elapsed = time.perf_counter() - started
        padded = len(batch) * max(len(row.ids) for row in batch)
        measured = elapsed / padded
        if (
            self._seconds_per_token == 0.0
        ):  # the first run sets it: averaging with the initial 0 would take 5x less
            self._seconds_per_token = measured
        else:
            self._seconds_per_token += SECONDS_PER_TOKEN_SMOOTHING * (measured - self._seconds_per_token)
        if self._metrics is not None:
            self._metrics.batch_duration.observe(elapsed)
            self._metrics.batch_size.observe(len(batch))
            requests = {id(row.request): row.request for row in batch}
            self._metrics.batch_requests.observe(len(requests))
            for (
                request
            ) in requests.values():  # buffered: one write per turn of the loop (service/api/metrics.py)
                self._metrics.observe_later(self._metrics.queue_wait, (), started - request.enqueued_at)
        for row, vector in zip(batch, vectors, strict=True):
            request = row.request
            if request.future.done():
                continue
            if request.vectors is None:
                request.vectors = np.empty((request.rows, vector.shape[0]), dtype=np.float32)
            request.vectors[row.index] = vector
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.vectors)

    def _embed(self, model: ServingModel, rows: list[Sequence[int]]) -> np.ndarray:
        return model.embedder.embed_tokens(rows)

    def _embed_cut(
        self, model: ServingModel, rows: list[Sequence[int]], dimensions: list[int | None]
    ) -> list[np.ndarray]:
        """In the model's thread: one vector per row, cut to its request's dims (one numpy call per dim)."""
        full = self._embed(model, rows)
        vectors = list(full)
        for dims in set(dimensions) - {None}:
            if dims >= full.shape[1]:
                continue
            positions = [index for index, wanted in enumerate(dimensions) if wanted == dims]
            for position, vector in zip(positions, truncate_dims(full[positions], dims), strict=True):
                vectors[position] = vector
        return vectors


def _tokenize(requests: list[_Request]) -> list[TokenizedTexts | Exception]:
    """In the model's thread: every request's texts, one `encode` call per model, split back per request."""
    by_model: dict[int, list[_Request]] = {}
    for request in requests:
        by_model.setdefault(id(request.model), []).append(request)
    results: dict[int, TokenizedTexts | Exception] = {}
    for group in by_model.values():
        texts = [text for request in group for text in request.texts]
        try:
            encoded = group[0].model.embedder.encode(texts)
        except Exception as err:  # each request of the group answers with it
            results.update((id(request), err) for request in group)
            continue
        start = 0
        for request in group:
            end = start + len(request.texts)
            results[id(request)] = TokenizedTexts(
                ids=encoded.ids[start:end],
                token_counts=encoded.token_counts[start:end],
                truncated=encoded.truncated[start:end],
            )
            start = end
    return [results[id(request)] for request in requests]
