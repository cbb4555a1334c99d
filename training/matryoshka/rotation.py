"""A post-hoc Matryoshka rotation: an orthogonal matrix, fitted by PCA on the training side's embeddings, that
orders the embedding axes by variance before truncation.

Why: truncating to the first k dims keeps whatever those dims hold; after this rotation they hold the k
directions of largest variance of the domain's embeddings. A rotation changes no cosine similarity at the full
dim, so full-dim quality is untouched, while small dims gain a lot (measured on SciFact: NDCG@10 at 64d from 92%
to 96% of 384d after MatryoshkaLoss training; benchmarks/results/sweep_h100_scifact.jsonl). It is fitted without
labels (texts only), then refined on the training pairs (training/matryoshka/rotation_learning.py: still orthogonal); the
learned steps are kept only when they improve the held-out dev queries' NDCG@10 by more than the dev set's noise
(training/finetune/dev_noise.py). "Beats" below is one rule (`_Comparison`): a gain beyond noise on the mean over the Matryoshka dims or at the
smallest dim (the dim the chain is for), and no dim losing beyond noise. The chain: PCA is the default whenever
there is a truncated dim (label-free and orthogonal, it raised the small dims on every set and model measured), and
is dropped only when some dim loses beyond noise against no rotation; the refinement must beat PCA (else PCA only),
a Matryoshka-Adaptor learned from the chosen rotation must beat it (else not kept; `_maybe_adapt`). One graph
serves every dim (the runtime truncates the full vector, and a smaller dim must stay a prefix of the larger), so
one transform is chosen for all of them. Stored as a bias-free linear `Dense` layer before
`Normalize`, so it is part of the saved model and of every exported ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_PAIRS = 10000  # training pairs used (their anchors join the PCA's sample)
MAX_CORPUS_TEXTS = (
    10000  # corpus texts encoded: enough for a 384-dim PCA and a realistic ranking, minutes on CPU
)
MIN_DEV_QUERIES = 5
# The general texts' share of the PCA's sample, as a fraction of the domain's total energy (their rows are weighted
# so that a few hundred everyday sentences count as much as 10,000 domain texts would at 1.0).
GENERAL_WEIGHT = 1.0
# The ranking term's weight in the adaptor candidate (benchmarks/small_dims.py's default).
ADAPTOR_RANK_WEIGHT = 0.1


@dataclass(frozen=True)
class RotationDecision:
    applied: bool
    reason: str
    dev_before: dict[str, float]
    dev_after: dict[str, float]
    fit_texts: int
    dev_gain: dict | None = None  # the kept choice's gain over no rotation, with its bootstrap bound
    dev_gain_by_dim: dict | None = None  # dim -> that gain at each dim alone (no dim may lose beyond noise)
    general: dict | None = None  # the general texts in the PCA's sample: how many, their weight
    learned_steps: list[
        str
    ] = ()  # the learned steps kept on top of PCA ("refinement", "adaptor"); () if none
    # each learned step's judgement (crossfit.py): the gain over what it would replace on the mean over dims and at
    # each dim, with its interval and the queries it was measured on (cross-fitted training queries, or dev)
    evidence: dict | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))


def fit_rotation(embeddings: np.ndarray) -> np.ndarray:
    """Rows are the principal axes (uncentered: a pure rotation, so cosine similarity is preserved)."""
    _, _, vt = np.linalg.svd(np.asarray(embeddings, dtype=np.float64), full_matrices=False)
    if vt.shape[0] != embeddings.shape[1]:
        raise ValueError(
            f"need at least {embeddings.shape[1]} texts to fit a rotation, got {embeddings.shape[0]}"
        )
    return vt.astype(np.float32)


def add_rotation(model, rotation: np.ndarray):
    """A new SentenceTransformer with the rotation inserted before its final Normalize (or at the end)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize

    dim = rotation.shape[0]
    dense = Dense(
        dim,
        dim,
        bias=False,
        activation_function=torch.nn.Identity(),
        init_weight=torch.tensor(rotation, dtype=torch.float32),
    )
    modules = list(model._modules.values())
    position = len(modules) - 1 if isinstance(modules[-1], Normalize) else len(modules)
    modules.insert(position, dense)
    rotated = SentenceTransformer(modules=modules, device=str(model.device))
    # A model built from modules starts with no prompts: keep the run's, or a prompt-trained model would be saved,
    # exported and gated without them (training/prompts.py).
    rotated.prompts = dict(getattr(model, "prompts", None) or {})
    rotated.default_prompt_name = getattr(model, "default_prompt_name", None)
    return rotated


@dataclass(frozen=True)
class RotationData:
    """What the rotation is fitted and checked on: the training side only (never the test split)."""

    corpus: list[str]  # texts retrieved from (and the PCA's sample of the domain)
    pairs: list[tuple[str, str]] = ()  # training (anchor, positive): what the learned refinement ranks
    labelled: dict[str, set[str]] | None = None  # anchor -> every labelled positive (dev relevance, masking)
    dev_queries: list[str] = ()  # held-out anchors, ranked against the whole corpus to decide
    # Texts from outside the domain (training/data/general_texts.py): the first half joins the PCA's sample (the second
    # is left for measuring); empty: the domain alone, as before issue 30.
    general_texts: list[str] = ()


def choose_rotation(
    model,
    data: RotationData,
    dims: list[int],
    mode: str = "auto",
    seed: int = 0,
    batch_size: int = 64,
    adaptor: str = "auto",
) -> tuple[object, RotationDecision]:
    """PCA rotation, refined on the training pairs when there are any (not with mode == "pca"); kept if
    mode == "on", or if it beats none on the dev queries ranked against the whole corpus (decide_rotation).

    Why the whole corpus: against a few hundred distractors small dims look fine; against the full corpus they
    lose what the test split loses."""
    if mode == "off":
        return model, RotationDecision(False, "rotation: off", {}, {}, 0)
    dim = model.get_embedding_dimension()
    matrix, decision = decide_rotation(model_encoder(model, batch_size), dim, data, dims, mode, seed, adaptor)
    return (add_rotation(model, matrix) if matrix is not None else model), decision


def model_encoder(model, batch_size: int = 64, known: dict | None = None):
    """`encode(texts, role)` for decide_rotation: the model's query / document encoding (with its prompts), taking
    what `known` ({(role, text): embedding} of this very model, e.g. from the dev evaluation) already has and
    adding what it encodes, so no text is encoded twice."""
    known = {} if known is None else known
    dim = model.get_embedding_dimension()

    def encode(texts: list[str], role: str) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if (role, t) not in known))
        if missing:
            method = model.encode_query if role == "query" else model.encode_document
            vectors = method(missing, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
            known.update(((role, t), v) for t, v in zip(missing, vectors, strict=True))
        if not texts:
            return np.zeros((0, dim), np.float32)
        return np.stack([known[(role, t)] for t in texts]).astype(np.float32)

    return encode


def decide_rotation(
    encode,
    dim: int,
    data: RotationData,
    dims: list[int],
    mode: str = "auto",
    seed: int = 0,
    adaptor: str = "auto",
) -> tuple[np.ndarray | None, RotationDecision]:
    """choose_rotation on an encoder: `encode(texts, role)` -> unit vectors ("query" / "document"). Returns the
    matrix to apply (None: no rotation) and the decision; benchmarks/small_dims.py calls it on cached embeddings.
    With mode and adaptor "auto", a Matryoshka-Adaptor started from the chosen rotation is the last candidate
    (`_maybe_adapt`)."""
    if mode == "off":
        return None, RotationDecision(False, "rotation: off", {}, {}, 0)
    rng = np.random.default_rng(seed)
    labelled = data.labelled or {}
    pairs = list(dict.fromkeys(data.pairs))
    if len(pairs) > MAX_PAIRS:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), MAX_PAIRS, replace=False))]
    needed = {p for _, p in pairs} | {t for q in data.dev_queries for t in labelled.get(q, ())}
    corpus = _sample_corpus(data.corpus, needed, rng)
    anchors = list(dict.fromkeys(a for a, _ in pairs))
    fitted = len(corpus) + len(anchors)
    if fitted < dim:
        return None, RotationDecision(
            False, f"only {fitted} texts to fit a {dim}-dim rotation", {}, {}, fitted
        )

    corpus_emb, anchor_emb = encode(corpus, "document"), encode(anchors, "query")
    from training.data.general_texts import split_general

    general_fit, _ = split_general(list(data.general_texts))
    # Symmetric everyday text: the query side, as the gate's general STS check encodes it.
    general_emb = encode(general_fit, "query") if general_fit else np.zeros((0, dim), np.float32)
    # The domain's texts (and the general ones, weighted): what the PCA and the adaptor fit. The general texts keep
    # the first dims from holding the domain's directions only (issue 30: small dims forgot other domains;
    # measured in benchmarks/forgetting.py, docs/decisions.md).
    domain_emb = np.vstack([corpus_emb, anchor_emb])
    pca = fit_rotation(_with_general(domain_emb, general_emb))
    fitted += len(general_fit)
    scorers = _whole_corpus_dev(
        data.dev_queries, corpus, labelled, dims, lambda t: encode(t, "query"), corpus_emb
    )
    dev, per_query, per_dim = scorers or (None, None, None)
    if dev is None:
        applied = mode == "on"
        why = "rotation (PCA): on" if applied else "no dev set to confirm the rotation helps: not applied"
        return (pca if applied else None), RotationDecision(applied, why, {}, {}, fitted)

    identity = np.eye(dim, dtype=np.float32)
    before = dev(identity)
    chosen, how = pca, "PCA"
    kept_steps = []
    refine = pairs and min(dims) < dim and mode != "pca"  # without a truncated dim nothing to refine for
    evidence = {}
    if refine:
        from training.matryoshka.crossfit import cross_fit
        from training.matryoshka.rotation_learning import learn_rotation

        position = {t: i for i, t in enumerate(corpus)}
        anchor_row = {a: i for i, a in enumerate(anchors)}
        pair_anchors = anchor_emb[[anchor_row[a] for a, _ in pairs]]
        pair_positives = np.array([position[p] for _, p in pairs])
        also = [{position[t] for t in labelled.get(a, ()) if t in position and t != p} for a, p in pairs]

        def refine_on(rows) -> np.ndarray:  # the refinement fitted on these pairs, stopped on the dev queries
            return learn_rotation(
                pca,
                pair_anchors[rows],
                pair_positives[rows],
                corpus_emb,
                [also[i] for i in rows],
                dims,
                lambda r: dev(r)["ndcg@10_mean"],
                seed=seed,
            )

        learned = refine_on(np.arange(len(pairs)))
        # Each learned step is judged on every training query, held out of its fit (crossfit.py); too few of
        # them: on the dev queries, as before.
        folds = cross_fit(pairs, pair_anchors, corpus, corpus_emb, labelled, dims, seed)
        # fold -> the transform that fold's adaptor starts from: PCA, or that fold's refinement once it is kept
        fold_start = {i: pca for i in range(len(folds.folds))} if folds is not None else {}
        if learned.step:
            refined = f"PCA refined on {len(pairs)} training pairs for {learned.step} steps"
            if folds is not None:
                fold_refined = {i: refine_on(fold.fit).rotation for i, fold in enumerate(folds.folds)}
                scores = folds.pooled(lambda i, _: fold_refined[i], lambda i, _: pca)
                over_pca = _Comparison.from_scores(scores, dim, seed, folds.label)
            else:  # the refinement stopped on the dev queries, so its dev gain is optimistic: beyond noise only
                over_pca = _Comparison.of(learned.rotation, pca, per_query, per_dim, dim, seed)
            evidence["refinement"] = over_pca.to_dict()
            if mode == "on" or over_pca.wins:
                chosen, how = learned.rotation, f"{refined}, {over_pca.describe()} over PCA"
                kept_steps.append("refinement")
                if folds is not None:
                    fold_start = fold_refined
            else:
                how = f"PCA only: {refined} gained {over_pca.describe()} over PCA"
    if refine and mode == "auto" and adaptor == "auto":
        previous = chosen
        judge = _Judge(per_query, per_dim, folds, fold_start)
        chosen, how, evidence["adaptor"] = _maybe_adapt(
            chosen, how, domain_emb, pair_anchors, pair_positives, corpus_emb, dims, judge, seed, general_emb
        )
        if chosen is not previous:  # _maybe_adapt kept the adaptor
            kept_steps.append("adaptor")
    after = dev(chosen)
    # One graph serves every dim (the served runtime truncates the full vector), so one transform must do for all
    # (_Comparison: a gain on the mean or at the smallest dim, and no dim worse beyond noise).
    over_none = _Comparison.of(chosen, identity, per_query, per_dim, dim, seed)
    # The PCA ordering is the default once there is a truncated dim: it is fitted without labels and orthogonal, and
    # on every set and model measured it raised the small dims on test (docs/decisions.md, "PCA by default"), so
    # the dev queries may veto it (a dim losing beyond noise) but need not prove it; each learned step on top of
    # it (refinement, adaptor) was taken only for a gain beyond noise.
    by_default = over_none.smallest is not None and not over_none.hurt and not over_none.wins
    applied = mode == "on" or over_none.wins or by_default
    verdict = "applied" if applied else "not applied"
    if by_default and mode != "on":
        verdict = "applied (the PCA ordering is the default: no dim loses beyond noise)"
    # What the other domains got: the general texts in the PCA's sample. Not a veto: a label-free check on held-out
    # general texts (the share of full-dim neighbours kept) could not see the forgetting it is for, since any PCA
    # ordering keeps more of the full dim's structure than the original order (docs/decisions.md, issue 30).
    general = {"fitted": len(general_fit), "weight": GENERAL_WEIGHT} if general_fit else None
    reason = (
        f"rotation ({how}): dev mean NDCG@10 over dims against the whole {len(corpus)}-text corpus "
        f"{before['ndcg@10_mean']:.4f} -> {after['ndcg@10_mean']:.4f}, gain {over_none.describe()}: {verdict}"
    )
    rounded = lambda m: {k: round(v, 5) for k, v in m.items()}  # noqa: E731
    return (chosen if applied else None), RotationDecision(
        applied,
        reason,
        rounded(before),
        rounded(after),
        fitted,
        over_none.mean.to_dict(),
        {str(d): g.to_dict() for d, g in over_none.by_dim.items()},
        general,
        kept_steps if applied else [],
        evidence or None,
    )


@dataclass(frozen=True)
class _Judge:
    """Where a learned step is judged: on cross-fitted training queries when `folds` is set (each fold's fit
    starts from `starts[fold]`), else on the dev queries (`per_query`, `per_dim`)."""

    per_query: object
    per_dim: object
    folds: object  # training.matryoshka.crossfit.CrossFit | None
    starts: dict


def _maybe_adapt(chosen, how, texts, anchors, positives, corpus_emb, dims, judge: _Judge, seed, general):
    """The chosen transform, or a Matryoshka-Adaptor started from it (training/matryoshka/adaptor.py, with the
    ranking term on the training pairs) when it beats the chosen one (`_Comparison`, on cross-fitted training
    queries: each fold's adaptor fitted on the other folds' pairs; the full dim is among the dims that may not
    lose). Unlike the rotation the adaptor is not orthogonal, so full-dim quality may move: that is what the per-dim
    check guards; on 2 of 5 sets it lost (docs/decisions.md). -> (transform, how, the evidence)."""
    from training.matryoshka.adaptor import learn_adaptor

    texts = np.vstack([texts, general])  # neighbourhoods to preserve: the general texts' too

    def adapt(start, rows):
        return learn_adaptor(
            start,
            texts,
            dims,
            anchors[rows],
            positives[rows],
            corpus_emb,
            rank_weight=ADAPTOR_RANK_WEIGHT,
            seed=seed,
        ).matrix

    adapted = adapt(chosen, np.arange(len(anchors)))
    if judge.folds is not None:
        fold_adapted = {i: adapt(judge.starts[i], fold.fit) for i, fold in enumerate(judge.folds.folds)}
        scores = judge.folds.pooled(lambda i, _: fold_adapted[i], lambda i, _: judge.starts[i])
        over = _Comparison.from_scores(scores, corpus_emb.shape[1], seed, judge.folds.label)
    else:
        over = _Comparison.of(adapted, chosen, judge.per_query, judge.per_dim, corpus_emb.shape[1], seed)
    if over.wins:
        return adapted, f"{how}, then a Matryoshka-Adaptor: {over.describe()} over it", over.to_dict()
    return chosen, f"{how}; a Matryoshka-Adaptor on top gained {over.describe()}: not kept", over.to_dict()


@dataclass(frozen=True)
class _Comparison:
    """A candidate transform against a reference on the dev queries, the rule every step of the chain uses: it wins
    when it gains beyond noise on the mean NDCG@10 over the dims or at the smallest truncated dim (the dim the
    chain is for: averaged with the full dim, which an orthogonal rotation cannot change, a gain there drowns, as
    SciFact's 64d +0.030 beyond noise did in a mean within noise), and no dim loses beyond noise."""

    mean: object  # training.finetune.dev_noise.DevGain over the per-query mean across dims
    by_dim: dict  # dim -> DevGain
    smallest: int | None  # the smallest truncated dim (None: only the full dim)

    @classmethod
    def of(cls, candidate, reference, per_query, per_dim, full_dim: int, seed: int) -> _Comparison:
        """On the dev queries: `per_query(transform)` and `per_dim(transform)` score them."""
        return cls.from_scores(
            (per_query(candidate), per_query(reference), per_dim(candidate), per_dim(reference)),
            full_dim,
            seed,
        )

    @classmethod
    def from_scores(cls, scores, full_dim: int, seed: int, over: str = "dev queries") -> _Comparison:
        """scores: (candidate per query, reference per query, candidate dim -> per query, reference dim -> ...)."""
        from training.finetune.dev_noise import paired_gain

        cand_q, ref_q, cand_d, ref_d = scores
        by_dim = {d: paired_gain(cand_d[d], ref_d[d], seed, over) for d in cand_d}
        smallest = min(by_dim) if min(by_dim) < full_dim else None
        return cls(paired_gain(cand_q, ref_q, seed, over), by_dim, smallest)

    @property
    def hurt(self) -> list[str]:
        return [
            f"d{d} {g.mean:+.4f} (95% upper bound {g.high:+.4f})"
            for d, g in self.by_dim.items()
            if g.high < 0
        ]

    @property
    def wins(self) -> bool:
        at_smallest = self.smallest is not None and self.by_dim[self.smallest].beyond_noise
        return (self.mean.beyond_noise or at_smallest) and not self.hurt

    def to_dict(self) -> dict:
        """The evidence, for train/summary.json: the gain on the mean over dims and at each dim, with intervals."""
        return {
            "mean": self.mean.to_dict(),
            "by_dim": {str(d): g.to_dict() for d, g in self.by_dim.items()},
            "wins": self.wins,
        }

    def describe(self) -> str:
        text = self.mean.describe()
        if self.smallest is not None:
            text += f"; at d{self.smallest} {self.by_dim[self.smallest].describe()}"
        if self.hurt:
            text += f"; but it loses beyond noise at {', '.join(self.hurt)}"
        return text


def _with_general(domain: np.ndarray, general: np.ndarray) -> np.ndarray:
    """The PCA's sample: the domain's rows and the general rows, weighted to GENERAL_WEIGHT of the domain's energy
    (an uncentered PCA of unit vectors weighs each row by its squared norm)."""
    if not len(general):
        return domain
    scale = np.sqrt(GENERAL_WEIGHT * len(domain) / len(general))
    return np.vstack([domain, general * scale])


def _sample_corpus(corpus: list[str], needed: set[str], rng) -> list[str]:
    """Every text a pair or dev query needs, plus the others up to MAX_CORPUS_TEXTS (a sample, in order)."""
    texts = list(dict.fromkeys([*corpus, *sorted(needed - set(corpus))]))
    others = [i for i, t in enumerate(texts) if t not in needed]
    room = max(0, MAX_CORPUS_TEXTS - (len(texts) - len(others)))
    if len(others) > room:
        dropped = set(np.asarray(others)[rng.choice(len(others), len(others) - room, replace=False)].tolist())
        texts = [t for i, t in enumerate(texts) if i not in dropped]
    return texts


def _whole_corpus_dev(queries, corpus, labelled, dims, encode, corpus_emb):
    """(rotation -> dev metrics, rotation -> per-query NDCG@10 averaged over dims, rotation -> dim -> per-query
    NDCG@10) of `queries` against all of `corpus`; None without enough dev queries."""
    from training.finetune.dev_eval import MatryoshkaRetrievalEvaluator

    position = {t: i for i, t in enumerate(corpus)}
    kept = [(q, {position[t] for t in labelled.get(q, ()) if t in position}) for q in queries]
    kept = [(q, rel) for q, rel in kept if rel]
    if len(kept) < MIN_DEV_QUERIES:
        return None
    evaluator = MatryoshkaRetrievalEvaluator([q for q, _ in kept], corpus, [rel for _, rel in kept], dims)
    query_emb = encode([q for q, _ in kept])
    return (
        lambda r: evaluator.scores(query_emb @ r.T, corpus_emb @ r.T),
        lambda r: evaluator.per_query(query_emb @ r.T, corpus_emb @ r.T),
        lambda r: evaluator.per_query_by_dim(query_emb @ r.T, corpus_emb @ r.T),
    )
