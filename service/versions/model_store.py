"""Serve a version from BentoML's model store: how a built Bento (which has no registry) carries its model.

`gates.promotion.save_to_bento_store` copies each promoted registry version, as is, to `embedgate-embedder:<version>-<manifest hash>`;
`bentofile.yaml` lists `embedgate-embedder:latest`, so `bentoml build` packs it into the Bento.
"""

from __future__ import annotations

from pathlib import Path

from service.errors import ModelLoadError
from service.model.serving_model import BENTO_STORE_FILES, ServingModel, load_version


def store_model_dir(tag: str) -> tuple[Path, str]:
    """The folder of `tag` in BentoML's model store and its resolved tag ("latest" -> "embedgate-embedder:v0003-1a2b3c4d5e"),
    or ModelLoadError saying how to put a model there."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get(tag)
    except NotFound:
        raise ModelLoadError(
            f"no model {tag!r} in the BentoML model store; promote a run (`embedgate promote` "
            f"saves each version there) or set EMBEDGATE_REGISTRY to a registry"
        ) from None
    return Path(model.path), str(model.tag)


def load_from_store(tag: str, *, precision: str | None, threads: int | None) -> ServingModel:
    folder, resolved = store_model_dir(tag)
    return load_version(
        folder,
        precision=precision,
        threads=threads,
        source=f"bentoml-model-store:{resolved}",
        ignore_files=BENTO_STORE_FILES,
    )
