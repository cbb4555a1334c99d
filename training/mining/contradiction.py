"""Contradiction-based negatives from NLI labels: (premise, entailed hypothesis, contradicted hypothesis).

The contradicted hypothesis is the hardest natural negative for a premise: it shares its topic and wording but
not its meaning. Premises without both an entailment and a contradiction give no triplet (counted).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2


@dataclass(frozen=True)
class NliTriplets:
    anchors: list[str]
    positives: list[str]
    negatives: list[str]
    premises_without_pair: int

    def to_hf_dataset(self):
        import datasets

        return datasets.Dataset.from_dict(
            {"anchor": self.anchors, "positive": self.positives, "negative": self.negatives}
        )


def nli_triplets(premises: list[str], hypotheses: list[str], labels: list[int]) -> NliTriplets:
    """Every entailment of a premise paired with one of its contradictions (cycled when counts differ)."""
    entailed: dict[str, list[str]] = defaultdict(list)
    contradicted: dict[str, list[str]] = defaultdict(list)
    for premise, hypothesis, label in zip(premises, hypotheses, labels, strict=True):
        if int(label) == ENTAILMENT:
            entailed[premise].append(hypothesis)
        elif int(label) == CONTRADICTION:
            contradicted[premise].append(hypothesis)
    anchors, positives, negatives = [], [], []
    missing = 0
    for premise in dict.fromkeys(premises):
        pos, neg = entailed.get(premise, []), contradicted.get(premise, [])
        if not pos or not neg:
            missing += 1
            continue
        for i, hypothesis in enumerate(pos):
            anchors.append(premise)
            positives.append(hypothesis)
            negatives.append(neg[i % len(neg)])
    return NliTriplets(anchors, positives, negatives, missing)
