"""Is a gain measured on the dev set larger than the dev set's noise? A paired percentile bootstrap over dev queries.

Every choice training makes on dev data (training/matryoshka/rotation.py: rotation or not, refined or PCA-only, the adaptor;
training/finetune/checkpoint_choice.py; training/finetune/early_stopping.py: whether an epoch improved) is taken only when the lower
end of the gain's one-sided 95% bootstrap interval is above zero; otherwise the run keeps the
conservative option and says so. On the 30-80 dev queries most sets give, a gain of 0.01-0.02 NDCG@10 is within
the noise (the legal demo accepted a refinement on +0.01 dev that lost 0.027 at 64d on test).

Why hand-written and not gates/evaluation/significance.py: `training/` imports nothing of ours (the layering
test), and this needs only the interval, which scipy.stats.bootstrap computes; the gate's module adds p-values
and the randomization test for the promotion decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.90  # two-sided 90% interval = one-sided 95% lower bound
RESAMPLES = 2000


@dataclass(frozen=True)
class DevGain:
    mean: float  # mean over dev queries of (after - before)
    low: float  # lower end of the one-sided 95% interval
    high: float
    n: int
    over: str = (
        "dev queries"  # what the n queries are (cross-fitted training queries, for the rotation's steps)
    )

    @property
    def beyond_noise(self) -> bool:
        return self.low > 0

    def describe(self) -> str:
        noise = "the dev set's noise" if self.over == "dev queries" else "their noise"
        return (
            f"{self.mean:+.4f} (95% lower bound {self.low:+.4f} over {self.n} {self.over}: "
            f"{'beyond' if self.beyond_noise else 'within'} {noise})"
        )

    def to_dict(self) -> dict:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def paired_gain(after, before, seed: int = 0, over: str = "dev queries") -> DevGain:
    """The mean per-query gain of `after` over `before` (same queries, same order) with its bootstrap interval.
    over: what the queries are, for the description."""
    after, before = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if after.ndim != 1 or after.shape != before.shape or after.size < 2:
        raise ValueError(
            f"need two equally long per-query score lists (at least 2 queries), got shapes "
            f"{after.shape} and {before.shape}"
        )
    diff = after - before
    mean = float(diff.mean())
    if np.ptp(diff) == 0:  # every query moved by the same amount: no spread to resample (scipy would warn)
        return DevGain(mean, mean, mean, int(diff.size), over)
    from scipy.stats import bootstrap

    interval = bootstrap(
        (diff,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return DevGain(mean, float(interval.low), float(interval.high), int(diff.size), over)
