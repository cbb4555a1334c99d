"""The rules a drift threshold follows, shared by the calibration that sets them at promotion and the window
judge that applies them (compute.py): floors, how many held-out queries a signal needs, novelty's exact threshold.

    novelty_window_threshold(reference.spec, rows=480)   # the threshold for a window of 480 distinct rows

A module of its own because calibration measures with compute's descriptor report and compute asks for novelty's
per-window threshold: each importing the other was a circle. calibration.py's docstring says where the numbers
come from.
"""

from __future__ import annotations

from service.drift.reference import ReferenceSpec
from service.drift.signals import novelty_threshold

# Lowest threshold per signal, whatever the null spread (see calibration.py's docstring for where they come from).
FLOORS = {"embedding": 0.55, "retrieval": 0.05, "novelty": 0.05, "descriptors": 0.5}
# Held-out queries a signal needs before it may alarm: pseudo-windows of >= 10 against >= 10 held-out queries;
# novelty's cutoff is an order statistic of >= 20 held-out queries in each pseudo-reference.
MIN_HELD_OUT = {"embedding": 20, "retrieval": 20, "novelty": 40, "descriptors": 20}
# Novelty's per-window false-alarm probability: its threshold is exact (order statistics), not resampled.
NOVELTY_ALPHA = 0.001


def enough_held_out(held_out: int) -> bool:
    """Whether `held_out` queries can stand for new traffic (else the whole reference does)."""
    return held_out >= min(MIN_HELD_OUT.values())


def novelty_window_threshold(spec: ReferenceSpec, rows: int) -> float:
    """Novelty's threshold for a window of `rows` effective rows (signals.novelty_threshold) against the queries
    the cutoff came from (the held-out ones, or all when there are too few)."""
    baseline = spec.held_out_count if enough_held_out(spec.held_out_count) else spec.query_count
    return novelty_threshold(rows, baseline, NOVELTY_ALPHA, FLOORS["novelty"])
