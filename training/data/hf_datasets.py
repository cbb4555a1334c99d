"""Hugging Face `datasets` as data sources, read into the same table the file readers give, so the column
mapping and the data gate apply unchanged:

    data/my_pairs/            a folder written by Dataset.save_to_disk (or DatasetDict.save_to_disk: split "train")
    hf://owner/name           a Hub dataset, split "train" (hf://owner/name@test for another split); needs the Hub,
                              or its copy in the Hugging Face cache when HF_HUB_OFFLINE=1

A Hub dataset is named with the hf:// prefix so that a mistyped file path is never sent to the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.errors import DataFormatError

HUB_PREFIX = "hf://"
DEFAULT_SPLIT = "train"


def hub_name(path: str | Path) -> str | None:
    """`hf://owner/name[@split]` -> "owner/name[@split]"; None for anything else. (pathlib folds the double slash
    of a Path("hf://...") into one, so both spellings are recognised.)"""
    text = str(path)
    for prefix in (HUB_PREFIX, "hf:/"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return None


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by `datasets` save_to_disk (one Dataset, or a DatasetDict of splits)."""
    path = Path(path)
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def is_hf_source(path: str | Path) -> bool:
    return hub_name(path) is not None or is_saved_dataset(path)


def read_hf_table(path: str | Path) -> Any:
    """A save_to_disk folder or an hf:// Hub dataset -> pandas DataFrame (index = 1-based row numbers, as the
    file readers give, so data-gate reports name rows the same way)."""
    name = hub_name(path)
    dataset = _from_hub(name) if name is not None else _from_disk(Path(path))
    frame = dataset.to_pandas()
    frame.index = range(1, len(frame) + 1)
    return frame


def _from_disk(path: Path) -> Any:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises FileNotFoundError / its own errors for a damaged folder
        raise DataFormatError(
            f"{path}: not a readable datasets save_to_disk folder ({type(err).__name__}: {err}); "
            f"save it again with Dataset.save_to_disk"
        ) from None
    return _one_split(loaded, str(path), DEFAULT_SPLIT)


def _from_hub(name: str) -> Any:
    import datasets

    repo, _, split = name.partition("@")
    split = split or DEFAULT_SPLIT
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        loaded = datasets.load_dataset(repo, split=split)
    except Exception as err:  # network, missing repo, missing split, offline without a cached copy
        why = (
            "the Hub is off (HF_HUB_OFFLINE=1) and it is not in the Hugging Face cache"
            if offline
            else f"it could not be loaded from the Hub ({type(err).__name__})"
        )
        raise DataFormatError(
            f"dataset {HUB_PREFIX}{name}: {why}; check the name and split, or save it with "
            f"save_to_disk where the Hub is reachable and pass that folder"
        ) from None
    return _one_split(loaded, f"{HUB_PREFIX}{name}", split)


def _one_split(loaded: Any, where: str, split: str) -> Any:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataFormatError(
                f"{where}: a DatasetDict without a {split!r} split (it has {sorted(loaded)}); "
                f"save the split to train on with Dataset.save_to_disk"
            )
        loaded = loaded[split]
    if not isinstance(loaded, datasets.Dataset):
        raise DataFormatError(f"{where}: expected a datasets.Dataset, got {type(loaded).__name__}")
    return loaded
