"""The one mining step that `embedgate mine`, `embedgate train` and the pipeline share.

`mine_training_rows` takes a prepared training set and a MiningConfig and returns the mined rows. Training calls
it through `finetune.train` (which then saves the rows in the run and hands them to the data gate); the `mine`
command calls it directly and saves the rows where the user asked. Keeping one implementation means the rows a
user inspects with `embedgate mine` are the rows a pipeline with the same options trains on.
"""

from __future__ import annotations

from training.config import MiningConfig
from training.errors import ConfigError
from training.mining.mine import MinedSet, mine


def resolve_strategy(strategy: str, prepared) -> str:
    """`auto` -> model-mined negatives when some rows lack negatives, else `none` (rows keep their own)."""
    if strategy == "auto":
        return "model" if prepared.needs_negatives else "none"
    return strategy


def mine_training_rows(prepared, mining: MiningConfig, model, seed: int, encode=None) -> MinedSet:
    """Mine negatives for `prepared.train` with `mining.strategy` (already resolved: not `auto` or `none`).

    Args:
        prepared: a `training.finetune.prepare.TrainingData` (train rows with anchor/positive, corpus, labelled positives).
        mining: the mining options; `domain_confusion_path` is read here for strategy domain_confusion.
        model: the SentenceTransformer that scores candidates (strategies model, curriculum, domain_confusion).
        seed: random seed for sampling strategies.
        encode: (texts, role) -> unit vectors with `model`, role "query" or "document" (default: the model's
            encode_query / encode_document, which add its prompts; training passes one that reads the cache).

    Returns:
        The mined rows with their statistics. Strategy `contradiction` takes the NLI triplets that data
        preparation already built (premise, entailed, contradicted hypothesis) as they are.

    Raises:
        ConfigError: strategy contradiction on data that is not NLI; `auto`/`none` (from `mine`).
    """
    strategy = mining.strategy
    if strategy == "contradiction":
        if prepared.dataset_type.value != "nli":
            raise ConfigError(
                f"strategy contradiction needs NLI data (premise, hypothesis, label), got "
                f"{prepared.dataset_type.value}"
            )
        rows = prepared.train
        return MinedSet(
            list(rows["anchor"]),
            list(rows["positive"]),
            [[n] for n in rows["negative"]],
            "contradiction",
            stats={"rows_in": len(rows)},
        )
    domain = None
    if strategy == "domain_confusion":
        from training.data.readers import read_text

        domain = [t for t in read_text(mining.domain_confusion_path).splitlines() if t.strip()]
    return mine(
        list(prepared.train["anchor"]),
        list(prepared.train["positive"]),
        prepared.corpus,
        mining,
        model=model,
        labelled=prepared.labelled,
        seed=seed,
        domain_texts=domain,
        encode=encode,
    )
