"""Serving a version in an older version's embedding space (backward-compatible upgrades, docs/versions.md).

A version promoted with compatible spaces stores, beside its own graphs, one export per older version it answers
for (`compat/v0001/onnx/`: the new model plus a map into v0001's space, truncation and L2 inside the graph) and
lists them in its manifest (`compatible_spaces: {"v0001": {"serving_dim": 128, "dims": [...], ...}}`).

Names a client may send as `model` (the same with the service-name prefix, `embedgate-embedder:v0002@v0001`):
    v0002@v0001      v0002's model, answering in v0001's space: its vectors compare with vectors stored by v0001
    champion@v0001   the newest version, up to the champion, that answers in v0001's space (v0001 itself when no
                     later version does): set once, a v0001 client gets every compatible upgrade as it is promoted
    candidate@v0001  the same, up to the candidate
    v0001@v0001      v0001 itself
`dimensions` defaults to the old version's serving dim and may be any of its dims. The response's `model` and the
`x-embedgate-model-version` header name both (`v0002@v0001`). Pinned `v0001` is unchanged, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from service.errors import ModelLoadError
from service.model.embedder import OnnxEmbedder
from service.model.serving_model import ServingModel, ready_model
from service.registry.registry import VERSION_PATTERN, verify_manifest

SEPARATOR = "@"


def split_space(name: str) -> tuple[str, str | None]:
    """ "v0002@v0001" -> ("v0002", "v0001"); a name without "@" -> (name, None). The space must be a version id."""
    base, sep, space = name.partition(SEPARATOR)
    if not sep:
        return name, None
    if not VERSION_PATTERN.match(space):
        raise ValueError(
            f"model {name!r}: after {SEPARATOR!r} expected the version whose space is wanted (e.g. v0001), "
            f"got {space!r}"
        )
    return base, space


def spaces_in_manifest(manifest: dict[str, Any]) -> tuple[str, ...]:
    spaces = manifest.get("compatible_spaces") or {}
    return tuple(sorted(spaces, key=lambda v: int(v[1:]))) if isinstance(spaces, dict) else ()


def newest_in_space(
    servable: Iterable[str], upto: str, space: str, spaces_of: Callable[[str], Iterable[str]]
) -> str | None:
    """The newest of `servable` up to `upto` that answers in `space` (the space's own version counts): what
    `champion@<space>` serves when `upto` is the champion. `spaces_of(version)`: the spaces a version answers in."""
    for version in sorted(servable, key=lambda v: -int(v[1:])):
        if int(version[1:]) <= int(upto[1:]) and (version == space or space in spaces_of(version)):
            return version
    return None


def compat_files(registry: Any, version: str, space: str, precision: str | None) -> Path:
    """The version's folder holding what serving it in `space` reads: on object storage only the compatible
    export's json, tokenizer and the full-dim graph of `precision` are fetched (and verified), as for a version
    (service.model.serving_model.serving_files)."""
    import json

    from service.registry.object_registry import fetched_dir

    prefix = f"compat/{space}/onnx/"
    parts = ("manifest.json", f"{prefix}embedder.json", f"{prefix}export.json", f"{prefix}tokenizer/")
    root = fetched_dir(registry, version, parts)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        config = json.loads((root / prefix / "embedder.json").read_text(encoding="utf-8"))
        precision = precision or manifest.get("serve_precision") or "fp32"
        graph = config["graphs"][str(config["full_dim"])][precision]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return root  # load_compatible says what is missing
    return fetched_dir(registry, version, (*parts, prefix + graph))


def load_compatible(
    version_dir: Path, space: str, *, precision: str | None, threads: int | None, source: str | None = None
) -> ServingModel:
    """The version's graph for `space`, verified (manifest) and warmed up like any version."""
    version_dir = Path(version_dir)
    manifest = verify_manifest(version_dir)
    entry = (manifest.get("compatible_spaces") or {}).get(space)
    version = str(manifest.get("version") or version_dir.name)
    if entry is None:
        raise ModelLoadError(
            f"{version} answers in no {space} space; its compatible spaces: {list(spaces_in_manifest(manifest))}"
        )
    precision = precision or manifest.get("serve_precision") or "fp32"
    embedder = OnnxEmbedder.from_export_dir(
        version_dir / "compat" / space / "onnx",
        precision=precision,
        threads=threads,
        verify_sha256=False,  # the manifest was just verified
        allow_spinning=False,
    )
    return ready_model(
        f"{version}{SEPARATOR}{space}",
        embedder,
        int(entry.get("serving_dim") or embedder.dims[0]),
        precision,
        source or str(version_dir),
        manifest.get("run_id"),
        f"{version_dir}: the {space} space's serving_dim",
    )
