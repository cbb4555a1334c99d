"""Which texts `embedgate pipeline` builds a promoted version's drift reference from: the evaluation folder's
judged queries, told apart by whether training saw their text (held-out ones calibrate the alarms, see
service/drift/reference_builder.py and docs/drift.md), and a random sample of the corpus. An STS eval set (scored
pairs) gives its sentences instead, and a sample of all sentences as the corpus."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReferenceTexts:
    """The texts `embedgate pipeline` builds a version's reference from."""

    queries: list[str]  # judged queries of the domain the model was trained on
    held_out_queries: list[str]  # judged queries it never saw (eval split, any split but the training one)
    corpus_sample: list[str]


def pipeline_reference_texts(config: Any, seed: int = 0, train_data: Any = None) -> ReferenceTexts:
    """The domain's judged queries (the evaluation BEIR folder, every split), told apart by whether training saw
    their text, and a random corpus sample. Held-out queries are kept first when the caps
    (`promotion.reference_queries`, `reference_corpus`) cut: they are the ones that calibrate.
    train_data: the training table already loaded (the pipeline's one load); read from the config when None."""
    import random

    from training.data.hf_datasets import is_hf_source
    from training.data.loading import load_dataset

    eval_path = config.evaluation_data()
    if not Path(eval_path).is_dir() or is_hf_source(eval_path):
        return _scored_pairs_texts(config, eval_path, seed, train_data)
    data = load_dataset(eval_path, "ir")
    texts = data.query_texts()
    judged = sorted({q for split in data.splits for q in data.split(split).qrels if q in texts})
    trained_texts = _trained_texts(config, data, train_data)
    held = [texts[q] for q in judged if texts[q] not in trained_texts]
    trained = [texts[q] for q in judged if texts[q] in trained_texts]
    rng = random.Random(seed)
    cap = config.promotion.reference_queries
    held = rng.sample(held, min(len(held), cap))
    trained = rng.sample(trained, min(len(trained), cap - len(held)))
    docs = list(data.doc_texts().values())
    return ReferenceTexts(trained, held, rng.sample(docs, min(len(docs), config.promotion.reference_corpus)))


def _scored_pairs_texts(config: Any, eval_path: Path, seed: int, train_data: Any = None) -> ReferenceTexts:
    """An STS eval set: its sentences are what clients embed; those training never saw (all of them, for pairs
    the pipeline held out by sentence) calibrate. No corpus: a sample of every sentence stands in for it."""
    import random

    from training.data.loading import load_dataset

    pairs = load_dataset(eval_path, "sts").frame
    trained_texts = _trained_texts(config, None, train_data)
    sentences = list(dict.fromkeys(str(t) for c in ("sentence1", "sentence2") for t in pairs[c].dropna()))
    rng = random.Random(seed)
    cap = config.promotion.reference_queries
    held = [t for t in sentences if t not in trained_texts]
    held = rng.sample(held, min(len(held), cap))
    trained = sorted(trained_texts)
    trained = rng.sample(trained, min(len(trained), cap - len(held)))
    everything = sorted(trained_texts | set(sentences))
    return ReferenceTexts(
        trained, held, rng.sample(everything, min(len(everything), config.promotion.reference_corpus))
    )


def _trained_texts(config: Any, eval_data: Any, train_data: Any = None) -> set[str]:
    """Every text the training split holds: its queries (IR), or every text cell of a training table."""
    from training.data.beir import IRDataset
    from training.data.loading import load_dataset

    data_config = config.train.data
    same_folder = eval_data is not None and (
        Path(data_config.path).resolve() == Path(config.evaluation_data()).resolve()
    )
    if train_data is not None:
        data = train_data
    elif same_folder:
        data = eval_data
    else:
        data = load_dataset(data_config.path, data_config.type, data_config.columns)
    if isinstance(data, IRDataset):
        texts = data.query_texts()
        return {texts[q] for q in data.split(data_config.split).qrels if q in texts}
    frame = data.frame
    return {value for column in frame.columns for value in frame[column] if isinstance(value, str)}
