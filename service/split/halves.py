"""Split mode's two halves (service/split/app.py): HTTP workers that tokenise and answer, one model process that runs
the graph. This module holds what each side does besides BentoML's plumbing.

    batcher = RemoteBatcher(call, max_batch_tokens=512)     # in each HTTP worker, in place of MicroBatcher;
    encoded, vectors = await batcher.embed_texts(model, texts, dimensions, check)   # call: pack_ids -> HTTP
    version, ids = unpack_ids(body)                           # in the model process, on its packed route
    vectors = await model_side_embed(runtime, version, ids)   # -> pack_vectors(vectors)

Why rows travel in bulk, packed: a call to the model service is an HTTP request over a Unix socket that the model
process answers through its own server (uvicorn, h11, BentoML's middleware), about as costly as one of ours (1.6 ms
of its event loop per call measured; through BentoML's API layer with pickle and pydantic, 2.3 ms). One call per
client request would put that cost back on the model's core. So each HTTP worker sends whatever rows it has
queued in one call, at most `max_in_flight` calls at a time: under load the rows of many requests share a call,
and the model process batches the calls of all HTTP workers together (its own MicroBatcher).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from service.model.embedder import truncate_dims

if TYPE_CHECKING:
    import numpy as np

    from service.model.serving_model import ServingModel
    from service.model.tokenization import TokenizedTexts
    from service.runtime import ServingRuntime

# Calls to the model service one HTTP worker keeps open: two, so the next call is queued in the model process while
# the answer to the last one travels back.
MAX_IN_FLIGHT = 2


class ModelServiceError(RuntimeError):
    """The model process refused or failed a call; the message says which version and why."""


class RemoteBatcher:
    """MicroBatcher's interface (`embed_texts`, `embed_tokens`, `start`, `stop`) over calls to the model service."""

    def __init__(
        self,
        call: Callable[[str, list[list[int]]], Awaitable[Any]],
        max_batch_tokens: int,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._call = call
        self.max_batch_tokens = max_batch_tokens  # the model process's budget, shown by /info
        self._max_in_flight = max_in_flight
        self._queued: list[tuple[str, Sequence[Sequence[int]], asyncio.Future]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        """Nothing to start: calls are made as rows arrive."""

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for _, _, future in self._queued:
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))
        self._queued.clear()

    async def embed_texts(
        self,
        model: ServingModel,
        texts: Sequence[str],
        dimensions: int | None = None,
        check: Callable[[TokenizedTexts], None] | None = None,
    ) -> tuple[TokenizedTexts, np.ndarray]:
        """Tokenised here, in the HTTP worker (the model process only runs the graph), checked, then embedded."""
        encoded = model.embedder.encode(texts)
        if check is not None:
            check(encoded)
        return encoded, await self.embed_tokens(model, encoded.ids, dimensions)

    async def embed_tokens(
        self, model: ServingModel, ids: Sequence[Sequence[int]], dimensions: int | None = None
    ) -> np.ndarray:
        if not ids:
            raise ValueError("embed_tokens needs at least one row of token ids, got none")
        future = asyncio.get_running_loop().create_future()
        self._queued.append((model.version, ids, future))
        self._send_if_free()
        vectors = await future
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = truncate_dims(vectors, dimensions)  # Matryoshka: the first `dimensions`, re-normalised
        return vectors

    def _send_if_free(self) -> None:
        while self._queued and self._in_flight < self._max_in_flight:
            version = self._queued[0][0]
            calls = [entry for entry in self._queued if entry[0] == version and not entry[2].done()]
            self._queued = [entry for entry in self._queued if entry[0] != version and not entry[2].done()]
            if not calls:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(version, calls))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(
        self, version: str, calls: list[tuple[str, Sequence[Sequence[int]], asyncio.Future]]
    ) -> None:
        rows = [row for _, ids, _ in calls for row in ids]
        try:
            try:
                vectors = await self._call(version, rows)
            except httpx.TransportError:
                # The model process closed an idle keep-alive connection just as this call reused it ("Server
                # disconnected", seen after 5 s idle): the call never ran there, and embedding is idempotent.
                vectors = await self._call(version, rows)
        except Exception as err:  # every request in this call answers with it (a 500 in the route)
            for _, _, future in calls:
                if not future.done():
                    future.set_exception(ModelServiceError(f"the model service failed for {version}: {err}"))
            return
        finally:
            self._in_flight -= 1
            self._send_if_free()
        start = 0
        for _, ids, future in calls:
            end = start + len(ids)
            if not future.done():
                future.set_result(vectors[start:end])
            start = end


# Packed calls (what the HTTP workers send): version, row lengths and token ids as little-endian int32, answered
# with float32 bytes; no pickle, no pydantic, no BentoML API layer on the model's core.
PACKED_PATH = "/packed/embed"


def packed_client(url: str, timeout_s: float) -> httpx.AsyncClient:
    """An HTTP client for the model process at `url`, as BentoML hands a dependency's address to its dependents:
    `file:///...sock` (a Unix socket, `bentoml serve` on one host), `tcp://host:port`, or `http(s)://...`."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme == "file":
        transport = httpx.AsyncHTTPTransport(uds=unquote(parsed.path))
        return httpx.AsyncClient(transport=transport, base_url="http://embedgate-model", timeout=timeout_s)
    if parsed.scheme == "tcp":
        return httpx.AsyncClient(base_url=f"http://{parsed.netloc}", timeout=timeout_s)
    if parsed.scheme in ("http", "https"):
        return httpx.AsyncClient(base_url=url, timeout=timeout_s)
    raise ModelServiceError(
        f"model service address {url!r}: expected file://, tcp:// or http(s)://, as BentoML gives its dependencies"
    )


def pack_ids(version: str, ids: Sequence[Sequence[int]]) -> bytes:
    """[u16 version length][version utf-8][u32 rows][i32 length per row][i32 ids of every row, in order]."""
    import itertools

    import numpy as np

    name = version.encode("utf-8")
    lengths = np.fromiter((len(row) for row in ids), dtype="<i4", count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype="<i4", count=int(lengths.sum()))
    header = len(name).to_bytes(2, "little") + name + len(ids).to_bytes(4, "little")
    return header + lengths.tobytes() + flat.tobytes()


def unpack_ids(body: bytes) -> tuple[str, list[np.ndarray]]:
    """`pack_ids`' version and rows (int32 arrays); ValueError naming what is wrong with a malformed body."""
    import numpy as np

    try:
        size = int.from_bytes(body[:2], "little")
        version = body[2 : 2 + size].decode("utf-8")
        rows = int.from_bytes(body[2 + size : 6 + size], "little")
        lengths = np.frombuffer(body, dtype="<i4", count=rows, offset=6 + size)
        flat = np.frombuffer(body, dtype="<i4", offset=6 + size + 4 * rows)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"packed ids: not a pack_ids body ({len(body)} bytes): {err}") from err
    if rows < 1 or (lengths < 1).any() or int(lengths.sum()) != len(flat):
        raise ValueError(
            f"packed ids: {rows} rows of lengths summing to {int(lengths.sum())}, but {len(flat)} ids arrived; "
            f"expected a pack_ids body"
        )
    return version, np.split(flat, np.cumsum(lengths)[:-1])


def pack_vectors(vectors: np.ndarray) -> bytes:
    rows, dims = vectors.shape
    return rows.to_bytes(4, "little") + dims.to_bytes(4, "little") + vectors.astype("<f4").tobytes()


def unpack_vectors(body: bytes) -> np.ndarray:
    import numpy as np

    rows, dims = int.from_bytes(body[:4], "little"), int.from_bytes(body[4:8], "little")
    return np.frombuffer(body, dtype="<f4", offset=8).reshape(rows, dims)


async def model_side_embed(runtime: ServingRuntime, version: str, ids: list[list[int]]) -> np.ndarray:
    """In the model process: full-dim vectors of `ids` from `version` (the one the HTTP worker tokenised for),
    batched with every other call. A version it does not serve raises ModelServiceError naming what it has."""
    champion = runtime.model
    if champion is None:
        raise ModelServiceError(
            f"no model loaded in the model process yet: {runtime.holder.not_ready_reason}"
        )
    model = champion
    if version != champion.version:
        if runtime.versions is None:
            raise ModelServiceError(
                f"version {version!r} asked for, but the model process serves only {champion.version} "
                f"(BentoML model store): restart both services on the same model"
            )
        model = await runtime.versions.resolve(version, runtime.settings.model_name, champion)
    return await runtime.batcher.embed_tokens(model, ids)
