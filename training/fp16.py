"""fp16 twin of an exported fp32 graph, for onnxruntime's CUDA provider (half the weights, tensor-core matmuls).

    convert_fp16(Path("d384/model.onnx"), Path("d384/model_fp16.onnx"))

The conversion is onnxruntime's own `onnxruntime.transformers.float16.convert_float_to_float16` (shipped inside
the onnxruntime wheel, so no new dependency; `onnxconverter_common.float16` is the same code and is used when
present instead of a missing onnxruntime.transformers). The graph's inputs and output keep their types
(keep_io_types): int64 ids in, float32 `sentence_embedding` out, so service.embedder, its contract check and every
client are unchanged; Cast nodes at the boundary do the rest.

Whether the twin is kept is the export's decision (training/export.py): cosine >= `min_cosine` to the fp32 graph
on the probe texts for every dim, otherwise no fp16 graph is written and the reason is recorded in export.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# What "keeps parity" means for fp16 (issue 16): the fp32 graph is the reference, since it is the one gated.
MIN_FP16_COSINE = 0.999


@dataclass(frozen=True)
class Fp16Settings:
    """Arguments of the float16 converter; recorded in export.json with the fp16 graphs."""

    keep_io_types: bool = True  # int64 ids in, float32 embedding out: the embedder contract stays as it is
    min_cosine: float = MIN_FP16_COSINE

    def to_dict(self) -> dict[str, Any]:
        return {"method": f"{_converter_module()}.convert_float_to_float16", **asdict(self)}


def convert_fp16(fp32_path: Path, fp16_path: Path, settings: Fp16Settings = Fp16Settings()) -> None:
    """Write the float16 version of the fp32 graph at `fp32_path` to `fp16_path`."""
    import importlib
    import logging

    import onnx

    converter = importlib.import_module(_converter_module())
    # The converter logs a line per clamped initializer (values below fp16's smallest subnormal) at INFO/DEBUG on
    # its own logger; the parity check is what judges the result, so keep those out of the user's terminal.
    logger = logging.getLogger(converter.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        model = converter.convert_float_to_float16(
            onnx.load(str(fp32_path)), keep_io_types=settings.keep_io_types
        )
    finally:
        logger.setLevel(level)
    onnx.save(model, str(fp16_path))


def _converter_module() -> str:
    import importlib.util

    for name in ("onnxruntime.transformers.float16", "onnxconverter_common.float16"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except ModuleNotFoundError:  # the parent package itself is missing
            continue
    from training.errors import ExportError

    raise ExportError(
        "fp16 export needs onnxruntime's float16 converter (onnxruntime.transformers.float16, part of the "
        "onnxruntime wheel) or onnxconverter-common; neither is importable: reinstall onnxruntime "
        "(pip install -c requirements/lock.txt onnxruntime), or export without --fp16"
    )
