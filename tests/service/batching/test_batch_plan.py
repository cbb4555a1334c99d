"""Token-budget batching: the planner's budget, length grouping and fairness rules, and the batcher that applies
them to concurrent requests (a fake model whose run time grows with padded tokens, so no graph is needed)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from types import SimpleNamespace

import numpy as np
import pytest

from service.batching.batch_plan import plan_batch
from service.batching.batcher import MicroBatcher


def drain(lengths: list[int], turns: list[float], max_tokens: int, max_size: int) -> list[list[int]]:
    """Plan batches until every row ran; returns the batches as row indices."""
    left = list(range(len(lengths)))
    batches = []
    while left:
        chosen = plan_batch(
            [lengths[row] for row in left], [turns[row] for row in left], max_tokens, max_size
        )
        assert chosen, "the planner returned an empty batch while rows were queued"
        batches.append([left[index] for index in chosen])
        left = [row for index, row in enumerate(left) if index not in set(chosen)]
    return batches


def test_every_batch_keeps_the_token_budget_and_the_size_cap_and_every_row_runs_once():
    rng = random.Random(0)
    lengths = [rng.choice([rng.randint(8, 30), rng.randint(100, 256)]) for _ in range(300)]
    batches = drain(lengths, [rng.random() for _ in lengths], max_tokens=1024, max_size=16)
    assert sorted(row for batch in batches for row in batch) == list(range(300))
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) * max(lengths[row] for row in batch) <= 1024


def test_a_row_longer_than_the_budget_runs_alone():
    assert plan_batch([300, 290, 20], [0.0, 1.0, 2.0], max_batch_tokens=256, max_batch_size=32) == [0]


def test_the_row_whose_turn_came_first_is_always_in_the_batch():
    rng = random.Random(1)
    for _ in range(200):
        lengths = [rng.randint(2, 256) for _ in range(rng.randint(1, 60))]
        turns = [rng.random() for _ in lengths]
        first = min(range(len(turns)), key=turns.__getitem__)
        assert first in plan_batch(
            lengths, turns, max_batch_tokens=rng.choice([64, 512, 2048]), max_batch_size=32
        )


def test_short_and_long_rows_are_batched_apart_so_padding_stays_small():
    # 1 passage to 4 queries, arriving interleaved: batching them in arrival order (as a texts-counted batcher
    # does) pads most queries to a passage's length.
    rng = random.Random(2)
    lengths = [rng.randint(180, 256) if index % 5 == 0 else rng.randint(10, 24) for index in range(200)]
    turns = [float(index) for index in range(200)]
    batches = drain(lengths, turns, max_tokens=2048, max_size=32)
    padded = sum(len(batch) * max(lengths[row] for row in batch) for batch in batches)
    in_arrival_order = sum(32 * max(lengths[start : start + 32]) for start in range(0, 200, 32))
    assert padded <= 1.15 * sum(lengths)
    assert padded < in_arrival_order / 3
    for batch in batches:  # every row is at least half as long as its batch's longest
        assert min(lengths[row] for row in batch) * 2 >= max(lengths[row] for row in batch)


def test_the_batch_takes_the_most_real_tokens_among_rows_of_similar_length():
    # the anchor (turn 0) is 100 tokens: 60-token rows may join it, 190-token rows too (100 >= 190 / 2);
    # 9 rows of 190 with it carry more real tokens than the 60s, within 2048 padded tokens.
    lengths = [100] + [60] * 10 + [190] * 10
    batch = plan_batch(lengths, [0.0] + [1.0] * 20, max_batch_tokens=2048, max_batch_size=32)
    assert 0 in batch and len(batch) == 10 and all(lengths[row] in (100, 190) for row in batch)


def test_plan_batch_rejects_inputs_that_do_not_match():
    with pytest.raises(ValueError, match="one entry per row, got 2 and 1"):
        plan_batch([1, 2], [0.0], 10, 10)
    with pytest.raises(ValueError, match="must be >= 1, got 0, 10"):
        plan_batch([1], [0.0], 0, 10)
    assert plan_batch([], [], 10, 10) == []


# ---- the batcher, with a fake model: run time proportional to padded tokens, vectors that name their row ----

SECONDS_PER_TOKEN = 2e-5


class FakeEmbedder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # lengths of the rows of each run, in run order
        self.first_ids: list[set[int]] = []  # the first token id of each row of each run

    def embed_tokens(self, rows):
        self.batches.append([len(row) for row in rows])
        self.first_ids.append({row[0] for row in rows})
        time.sleep(len(rows) * max(len(row) for row in rows) * SECONDS_PER_TOKEN)
        return np.array([[row[0], len(row)] for row in rows], dtype=np.float32)


def fake_model() -> SimpleNamespace:
    return SimpleNamespace(embedder=FakeEmbedder(), version="fake")


def rows(first_id: int, count: int, length: int) -> list[list[int]]:
    return [[first_id + index] * length for index in range(count)]


def test_the_batcher_returns_each_request_its_own_rows_in_order():
    model = fake_model()

    async def scenario():
        batcher = MicroBatcher(max_batch_size=8, max_batch_tokens=512)
        batcher.start()
        try:
            requests = [rows(1000 * index, 5, length) for index, length in enumerate((20, 200, 7, 120, 20))]
            requests.append([[9000] * 150, [9001] * 3, [9002] * 60])  # mixed lengths in one request
            return requests, await asyncio.gather(*(batcher.embed_tokens(model, ids) for ids in requests))
        finally:
            await batcher.stop()

    requests, results = asyncio.run(scenario())
    for ids, vectors in zip(requests, results, strict=True):
        np.testing.assert_array_equal(vectors, [[row[0], len(row)] for row in ids])
    assert all(len(run) * max(run) <= 512 and len(run) <= 8 for run in model.embedder.batches)


def test_a_short_request_is_not_starved_by_a_large_request_of_documents():
    # 64 documents of 250 tokens in one request, then a short query 1 ms later: the query runs within the
    # next two batches, not after all 16 document batches.
    model = fake_model()

    async def scenario():
        batcher = MicroBatcher(max_batch_size=32, max_batch_tokens=1000)
        batcher.start()
        try:
            warm = await batcher.embed_tokens(
                model, rows(0, 4, 250)
            )  # lets the batcher measure the model's speed
            documents = asyncio.ensure_future(batcher.embed_tokens(model, rows(1, 64, 250)))
            await asyncio.sleep(0.001)
            query = await batcher.embed_tokens(model, rows(5000, 1, 12))
            done_before_query = documents.done()
            await documents
            return warm, query, done_before_query
        finally:
            await batcher.stop()

    _, query, done_before_query = asyncio.run(scenario())
    np.testing.assert_array_equal(query, [[5000, 12]])
    assert not done_before_query
    runs = model.embedder.batches[1:]  # after the warm-up run
    query_run = next(index for index, run in enumerate(runs) if run == [12])
    assert query_run <= 2, f"the query ran as batch {query_run} of {len(runs)}: {runs}"


def test_a_one_text_query_queued_beside_one_text_passages_runs_before_them():
    # Two single-passage requests, then a single-query request 1 ms later, all queued behind a running batch.
    # Turns are virtual finish times (processor sharing), so the query runs first; with start times (arrival
    # order) it would wait for both passages.
    model = fake_model()

    async def scenario():
        batcher = MicroBatcher(max_batch_size=32, max_batch_tokens=250)
        batcher.start()
        try:
            await batcher.embed_tokens(model, rows(0, 1, 250))  # lets the batcher measure the model's speed
            # A 2500-token row runs alone for 50 ms: what follows queues behind it.
            blocker = asyncio.ensure_future(batcher.embed_tokens(model, rows(10, 1, 2500)))
            await asyncio.sleep(0.001)
            passages = [
                asyncio.ensure_future(batcher.embed_tokens(model, rows(20 + k, 1, 250))) for k in range(2)
            ]
            await asyncio.sleep(0.001)
            query = await batcher.embed_tokens(model, rows(5000, 1, 12))
            passages_done = [passage.done() for passage in passages]
            await asyncio.gather(blocker, *passages)
            return query, passages_done
        finally:
            await batcher.stop()

    query, passages_done = asyncio.run(scenario())
    np.testing.assert_array_equal(query, [[5000, 12]])
    runs = model.embedder.first_ids[2:]  # after the warm-up and the blocker
    assert runs[0] == {5000} and not any(passages_done), runs


def test_short_requests_keep_bounded_latency_while_documents_stream_in():
    model = fake_model()

    async def scenario():
        batcher = MicroBatcher(max_batch_size=32, max_batch_tokens=1000)
        batcher.start()
        waited = {}  # query id -> model runs started after it arrived and before its own

        async def indexer(seed):  # documents, 8 per request, back to back
            while not stop.is_set():
                await batcher.embed_tokens(model, rows(seed, 8, 240))

        async def one_query(index):
            query_id = 100_000 + index
            runs_before = len(model.embedder.batches)  # the run in progress, if any, is counted already
            await batcher.embed_tokens(model, rows(query_id, 1, 15))
            own = next(run for run, ids in enumerate(model.embedder.first_ids) if query_id in ids)
            waited[query_id] = own - runs_before

        stop = asyncio.Event()
        try:
            await batcher.embed_tokens(model, rows(0, 4, 240))  # lets the batcher measure the model's speed
            indexers = [asyncio.ensure_future(indexer(seed)) for seed in range(3)]
            await asyncio.sleep(0.05)
            for index in range(30):
                await asyncio.gather(*(one_query(index * 10 + k) for k in range(3)))
                await asyncio.sleep(0.002)
            stop.set()
            await asyncio.gather(*indexers)
        finally:
            await batcher.stop()
        return waited

    waited = asyncio.run(scenario())
    # Counted in model runs, not seconds, so a loaded machine cannot fail it: besides the run in progress, a query
    # waits for a few document runs at most (rows whose turn came before it), most for none; in arrival order it
    # would wait for the indexers' whole backlog (up to 24 documents, 6 runs).
    assert len(waited) == 90 and max(waited.values()) <= 3, sorted(waited.values())[-10:]
    assert statistics.median(waited.values()) <= 1, sorted(waited.values())


def test_microbatcher_rejects_bad_settings_and_empty_requests():
    with pytest.raises(ValueError, match="must be >= 1 and max_delay_s >= 0, got 8, 0, 0.0"):
        MicroBatcher(max_batch_size=8, max_batch_tokens=0)

    async def empty():
        batcher = MicroBatcher(max_batch_size=8)
        batcher.start()
        try:
            await batcher.embed_tokens(fake_model(), [])
        finally:
            await batcher.stop()

    with pytest.raises(ValueError, match="at least one row of token ids, got none"):
        asyncio.run(empty())


def test_the_default_budget_follows_the_device_and_an_explicit_one_wins(monkeypatch):
    from service.batching.batch_plan import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, default_batch_tokens
    from service.runtime import _providers_or_cpu
    from service.settings import ServeSettings

    assert default_batch_tokens(["CPUExecutionProvider"]) == CPU_BATCH_TOKENS
    assert default_batch_tokens([("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]) == (
        GPU_BATCH_TOKENS
    )
    monkeypatch.delenv("EMBEDGATE_DEVICE", raising=False)
    assert default_batch_tokens(_providers_or_cpu()) == CPU_BATCH_TOKENS
    monkeypatch.setenv(
        "EMBEDGATE_DEVICE", "cuda"
    )  # no CUDA provider here: the model load reports it, not this
    assert default_batch_tokens(_providers_or_cpu()) == CPU_BATCH_TOKENS
    assert ServeSettings.from_env({}).max_batch_tokens is None
    assert ServeSettings.from_env({"EMBEDGATE_MAX_BATCH_TOKENS": "2048"}).max_batch_tokens == 2048
