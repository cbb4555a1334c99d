"""`mine()`: (anchor, positive) rows + a corpus -> (anchor, positive, negative_1..n) rows, with statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.config import MiningConfig
from training.errors import ConfigError
from training.mining.candidates import FilterStats, fill_random, pick_negatives
from training.mining.retrievers import bm25_rankings, dense_rankings, random_rankings

CURRICULUM_STAGES = ("random", "bm25", "model")
NEEDS_MODEL = {"model", "curriculum", "domain_confusion"}


@dataclass
class MinedSet:
    """Mined rows plus what happened. `stages` gives curriculum row ranges [(name, start, end)], in order."""

    anchors: list[str]
    positives: list[str]
    negatives: list[list[str]]
    strategy: str
    stages: list[tuple[str, int, int]] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def num_negatives(self) -> int:
        return len(self.negatives[0]) if self.negatives else 0

    def to_hf_dataset(self):
        import datasets

        columns = {"anchor": self.anchors, "positive": self.positives}
        for i in range(self.num_negatives):
            columns[f"negative_{i + 1}"] = [row[i] for row in self.negatives]
        return datasets.Dataset.from_dict(columns)

    def summary(self) -> dict:
        return {
            "strategy": self.strategy,
            "rows": len(self),
            "num_negatives": self.num_negatives,
            "stages": [{"name": n, "start": s, "end": e} for n, s, e in self.stages],
            **self.stats,
        }

    def save(self, folder: Path) -> Path:
        """hard_negatives.jsonl (a hard-negatives dataset the data gate can validate) + mining.json."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "hard_negatives.jsonl"
        tmp = folder / ".hard_negatives.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            for a, p, negs in zip(self.anchors, self.positives, self.negatives, strict=True):
                row = {"anchor": a, "positive": p} | {f"negative_{i + 1}": n for i, n in enumerate(negs)}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
        (folder / "mining.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path


def mine(
    anchors: list[str],
    positives: list[str],
    corpus: list[str],
    config: MiningConfig,
    *,
    model=None,
    labelled: dict[str, set[str]] | None = None,
    seed: int = 42,
    domain_texts: list[str] | None = None,
    batch_size: int = 64,
    encode=None,
) -> MinedSet:
    """Mine `config.num_negatives` negatives per row with `config.strategy`.

    `corpus`: candidate texts (positives are added); `labelled`: every labelled positive per anchor text (all
    splits), never used as a negative; `model`: a SentenceTransformer scoring candidates (margin filter, model
    strategy); `domain_texts`: the related-domain pool for domain_confusion; `encode`: texts -> unit vectors with
    that model, called as encode(texts, role) with role 'query' or 'document' so each side gets its prompt
    (default `model.encode_query` / `encode_document`; the pipeline passes one that reads the embedding cache).
    """
    strategy = config.strategy
    if strategy in ("none", "auto", "contradiction"):
        raise ConfigError(
            f"mine() needs a retrieval strategy, got {strategy!r} (contradiction mining is "
            f"training.mining.contradiction.nli_triplets)"
        )
    if len(anchors) != len(positives):
        raise ConfigError(f"anchors ({len(anchors)}) and positives ({len(positives)}) must have equal length")
    if strategy in NEEDS_MODEL and model is None:
        raise ConfigError(f"mining strategy {strategy!r} needs a model to score candidates")
    if strategy == "domain_confusion" and not domain_texts:
        raise ConfigError(
            "mining strategy 'domain_confusion' needs domain_texts: texts from a related domain"
        )
    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys([*corpus, *positives]))  # deduplicated, order kept: index = position
    index = {text: i for i, text in enumerate(pool)}
    labelled = labelled or {}
    forbidden = [
        {index[t] for t in labelled.get(a, ()) if t in index} | {index[p]}
        for a, p in zip(anchors, positives, strict=True)
    ]
    n_needed = config.range_max

    q_emb = c_emb = None
    if model is not None and encode is None:

        def encode(texts, role):
            # Queries and documents with the model's own prompts (none when it has none), as they will be served.
            method = model.encode_query if role == "query" else model.encode_document
            return method(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

    if model is not None:
        unique_anchors = list(dict.fromkeys(anchors))
        by_anchor = dict(zip(unique_anchors, encode(unique_anchors, "query"), strict=True))
        q_emb = np.stack([by_anchor[a] for a in anchors])
        c_emb = encode(pool, "document")

    order = np.arange(len(anchors))
    plan: list[tuple[str, np.ndarray]]
    if strategy == "curriculum":
        shuffled = rng.permutation(len(anchors))
        plan = list(zip(CURRICULUM_STAGES, np.array_split(shuffled, len(CURRICULUM_STAGES)), strict=True))
    else:
        plan = [(strategy, order)]

    stats = FilterStats()
    out_a, out_p, out_n, stages = [], [], [], []
    for stage, rows in plan:
        candidates_pool, pool_emb, rankings = _rank(
            stage, rows, anchors, positives, pool, q_emb, c_emb, n_needed, rng, domain_texts, encode
        )
        start = len(out_a)
        for j, r in enumerate(rows):
            in_domain = candidates_pool is pool
            own = forbidden[r] if in_domain else set()
            # Texts from another domain cannot be unlabelled positives: the false-negative filter is for in-domain
            # candidates only.
            scores = pool_emb @ q_emb[r] if q_emb is not None and in_domain else None
            pos_score = float(c_emb[index[positives[r]]] @ q_emb[r]) if q_emb is not None else None
            chosen = pick_negatives(
                rankings[j],
                forbidden=own,
                anchor_scores=scores,
                positive_score=pos_score,
                num_negatives=config.num_negatives,
                range_min=0 if stage == "random" else config.range_min,
                range_max=config.range_max,
                relative_margin=config.relative_margin,
                sampling=config.sampling_strategy,
                rng=rng,
                stats=stats,
            )
            texts = [candidates_pool[i] for i in chosen]
            if len(texts) < config.num_negatives:  # top up from the main pool, never a positive
                extra = fill_random(
                    [],
                    n_corpus=len(pool),
                    forbidden=forbidden[r] | {index.get(t, -1) for t in texts},
                    num_negatives=config.num_negatives - len(texts),
                    rng=rng,
                    stats=stats,
                )
                texts += [pool[i] for i in extra]
            if len(texts) < config.num_negatives:
                continue  # the corpus has no text left that is not a positive of this anchor
            out_a.append(anchors[r])
            out_p.append(positives[r])
            out_n.append(texts)
        stages.append((stage, start, len(out_a)))
    dropped = len(anchors) - len(out_a)
    return MinedSet(
        out_a,
        out_p,
        out_n,
        strategy,
        stages if strategy == "curriculum" else [],
        {
            "rows_in": len(anchors),
            "rows_dropped_no_candidates": dropped,
            "pool_size": len(pool),
            "range_min": config.range_min,
            "range_max": config.range_max,
            "relative_margin": config.relative_margin,
            **stats.to_dict(),
        },
    )


def _rank(stage, rows, anchors, positives, pool, q_emb, c_emb, k, rng, domain_texts, encode):
    """-> (candidate texts, their embeddings or None, [len(rows), <=k] ranked indices into candidate texts)."""
    if stage == "random":
        return pool, c_emb, random_rankings(len(rows), len(pool), k, rng)
    if stage == "bm25":
        return pool, c_emb, bm25_rankings([anchors[r] for r in rows], pool, k)
    if stage == "partial_match":
        # Query BM25 with the *positive*: texts sharing its key terms but (after the margin filter) not its meaning.
        return pool, c_emb, bm25_rankings([positives[r] for r in rows], pool, k)
    if stage == "model":
        return pool, c_emb, dense_rankings(q_emb[rows], c_emb, k)
    if stage == "domain_confusion":
        texts = list(dict.fromkeys(domain_texts))
        emb = encode(texts, "document")
        return texts, emb, dense_rankings(q_emb[rows], emb, k)
    raise ConfigError(f"unknown mining strategy {stage!r}")
