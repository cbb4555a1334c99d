"""Which queued rows (one text each) run together next: token-budget batching with length grouping and fairness.

    rows = plan_batch(lengths=[12, 250, 14, 240, 11], turns=[0.0, 0.1, 0.2, 0.3, 0.4],
                      max_batch_tokens=1024, max_batch_size=32)       # -> [4, 0, 2]: the short ones

Rules, as text-embeddings-inference batches (`--max-batch-tokens`), adapted to a padded CPU graph:
- Budget: a batch costs `rows x longest row` padded tokens (what the graph computes); it stays within
  `max_batch_tokens` and `max_batch_size` rows. A single row longer than the budget still runs, alone.
- Fairness: the row with the earliest turn (see MicroBatcher: arrival, pushed back by the model time of the
  earlier rows of its own request) is always in the batch, so every row is served in bounded time and a
  stream of long documents cannot starve short queries (or the reverse).
- Grouping: the batch is a run of rows next to each other in length order around that row, and every row in it,
  that one included, is at least half as long as the batch's longest row: padding stays under half the batch.
  Of the runs allowed, the one with the most real tokens wins (then the least padding).

Hand-written because no library plans padded batches this way (TEI's queue is FIFO for padded models); kept free
of asyncio and onnxruntime so its rules are tested directly (tests/service/batching/test_batch_plan.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Default padded-token budgets per run. CPU: a 256-token passage costs the same per text alone or four to a run
# (MiniLM, 2 cores, 50-80 ms each), so a larger run only makes queued queries wait longer; 512 still holds a request
# of 32 short sentences in one run (256 split it: 227 against 258 sentences/s in one side-by-side run). GPU: batching
# is where the speed is; this is text-embeddings-inference's default.
CPU_BATCH_TOKENS = 512
GPU_BATCH_TOKENS = 16384


def default_batch_tokens(providers: Sequence) -> int:
    """The budget for a session on `providers` (onnxruntime's list): the GPU one when CUDA runs the graph."""
    names = [provider[0] if isinstance(provider, tuple) else provider for provider in providers]
    return GPU_BATCH_TOKENS if "CUDAExecutionProvider" in names else CPU_BATCH_TOKENS


def plan_batch(
    lengths: Sequence[int], turns: Sequence[float], max_batch_tokens: int, max_batch_size: int
) -> list[int]:
    """Indices into `lengths` (tokens per row) of the next batch, the row with the smallest turn included."""
    if len(lengths) != len(turns):
        raise ValueError(
            f"lengths and turns must have one entry per row, got {len(lengths)} and {len(turns)}"
        )
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise ValueError(
            f"max_batch_tokens and max_batch_size must be >= 1, got {max_batch_tokens}, {max_batch_size}"
        )
    if not lengths:
        return []
    anchor = min(range(len(turns)), key=turns.__getitem__)
    order = sorted(range(len(lengths)), key=lambda row: (lengths[row], turns[row]))
    sorted_lengths = [lengths[row] for row in order]
    position = order.index(anchor)
    prefix = [0]
    for length in sorted_lengths:
        prefix.append(prefix[-1] + length)

    best: tuple[int, int, int, int] | None = None  # (real tokens, -padding, -hi, lo)
    for hi in range(position, len(order)):
        longest = max(sorted_lengths[hi], 1)
        half = (longest + 1) // 2
        if hi > position and sorted_lengths[position] < half:
            break  # the anchor would be padded to over twice its length, here and for every longer row
        capacity = max(1, min(max_batch_size, max_batch_tokens // longest))
        lo = max(hi - capacity + 1, bisect_left(sorted_lengths, half, 0, hi + 1))
        if lo > position:
            break  # longer rows only shrink the capacity: no later run reaches the anchor
        real = prefix[hi + 1] - prefix[lo]
        candidate = (real, real - (hi - lo + 1) * longest, -hi, lo)
        if best is None or candidate > best:
            best = candidate
    assert best is not None  # hi == position always qualifies: capacity >= 1 and the anchor is >= half itself
    _, _, negative_hi, lo = best
    return order[lo : -negative_hi + 1]
