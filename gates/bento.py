"""Build the Bento of one registry's champion: `embedgate build-bento --registry registry`.

BentoML's model store is shared by every registry of a user, so a bentofile that names a store tag such as
`:latest` packs whichever registry saved last. Here the champion is read from the registry, saved to the store
under this registry's own name (gates.promotion.save_to_bento_store: `embedgate-embedder-<registry id>:<version>-
<manifest hash>`), and the Bento is built from a copy of the project's bentofile.yaml whose `models:` names that
exact tag, aliased to the tag the service loads when it has no registry (EMBEDGATE_MODEL_TAG's default). The
Bento therefore carries this registry's champion by construction, and its service loads it without settings.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from gates.errors import EmbedgateGateError
from gates.promotion import bento_model_name, registry_id, save_to_bento_store
from service.registry.registry import Registry

# What service.settings loads from the model store when there is no registry (EMBEDGATE_MODEL_TAG's default);
# inside a Bento, BentoML resolves this alias to the packed tag (bentoml.models.get reads the Bento's aliases).
SERVED_TAG = "embedgate-embedder:latest"
BENTOFILE = "bentofile.yaml"


@dataclass(frozen=True)
class BentoBuild:
    bento_tag: str
    model_tag: str
    version: str
    registry_id: str


def default_build_context() -> Path:
    """The project folder that holds bentofile.yaml and service/ (the checkout embedgate runs from)."""
    return Path(__file__).resolve().parent.parent


def bento_config(bentofile: Path, model_tag: str, version: str, reg_id: str) -> dict:
    """The project's bentofile with `models:` replaced by the champion's exact tag (anything listed there is
    dropped: a Bento carries one model, the champion), labelled with where it came from."""
    import yaml

    try:
        config = yaml.safe_load(bentofile.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise EmbedgateGateError(
            f"{bentofile}: not a readable bentofile ({err}); restore it from the repository"
        ) from None
    if not isinstance(config, dict) or "service" not in config:
        raise EmbedgateGateError(
            f"{bentofile}: expected a bentofile with a `service:` entry, got {type(config).__name__}; restore it "
            f"from the repository"
        )
    labels = {**(config.get("labels") or {}), "registry_id": reg_id, "registry_version": version}
    description = str(config.get("description") or "")
    if description.startswith("file:"):  # BentoML reads it relative to the working directory: inline it here
        description = (bentofile.parent / description[len("file:") :].strip()).read_text(encoding="utf-8")
    models = [{"tag": model_tag, "alias": SERVED_TAG}]
    return {**config, "labels": labels, "description": description, "models": models}


def build_bento(registry_root: str | Path, build_ctx: Path | None = None) -> BentoBuild:
    """Save the registry's champion to BentoML's model store (reused when it is there) and build a Bento that
    packs exactly it. EmbedgateGateError when the registry has no champion or the build folder is not the project."""
    import yaml

    build_ctx = Path(build_ctx or default_build_context())
    if not (build_ctx / BENTOFILE).is_file() or not (build_ctx / "service").is_dir():
        raise EmbedgateGateError(
            f"{build_ctx}: expected the embedgate project folder (with {BENTOFILE} and service/); run from your "
            f"clone or pass --build-ctx"
        )
    registry = Registry(registry_root)
    champion = registry.champion()
    if champion is None:
        raise EmbedgateGateError(
            f"{registry.location} has no champion: promote a run first (`embedgate promote RUN_DIR`), then build"
        )
    model_tag = save_to_bento_store(registry, champion.version)
    config = bento_config(build_ctx / BENTOFILE, model_tag, champion.version, registry_id(registry))
    import bentoml

    with tempfile.TemporaryDirectory(prefix="embedgate-bento-") as folder:
        bentofile = Path(folder) / BENTOFILE
        bentofile.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(build_ctx))
    return BentoBuild(str(bento.tag), model_tag, champion.version, registry_id(registry))


__all__ = ["BentoBuild", "SERVED_TAG", "bento_model_name", "build_bento"]
