"""fp16 twin of an exported fp32 graph, for onnxruntime's CUDA provider (half the weights, tensor-core matmuls).

    convert_fp16(Path("d384/model.onnx"), Path("d384/model_fp16.onnx"))

The conversion is onnxruntime's own `onnxruntime.transformers.float16.convert_float_to_float16` (shipped inside
the onnxruntime wheel, so no new dependency; `onnxconverter_common.float16` is the same code and is used when
present instead of a missing onnxruntime.transformers). The graph's inputs and output keep their types
(keep_io_types): int64 ids in, float32 `sentence_embedding` out, so service.model.embedder, its contract check and every
client are unchanged; Cast nodes at the boundary do the rest.

The output is normalised once more in fp32, after the cast back: the graph's own L2 normalisation ran in fp16 and
its vectors came out 1 +- 5e-4 long on the tiny test model, while clients are promised unit vectors (dot = cosine).
The direction is fp16's; the length is exact to fp32 precision.

Whether the twin is kept is the export's decision (training/export/export_run.py): cosine >= `min_cosine` to the fp32 graph
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
    fp32_normalize: bool = True  # normalise the output again in fp32: unit length to fp32 precision

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
    if settings.fp32_normalize:
        _normalize_output_in_fp32(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(fp16_path))


def _normalize_output_in_fp32(model: Any) -> None:
    """Append `y / max(||y||, 1e-12)` in fp32 after the output's cast back to float32.

    Blocking the graph's own final normalisation from conversion does not help: with keep_io_types the converter
    casts the blocked node's fp32 result to fp16 and back before the output, so lengths stay 1 +- 5e-4."""
    from onnx import TensorProto, helper

    graph = model.graph
    (output,) = graph.output
    raw = f"{output.name}_before_fp32_normalize"
    for node in graph.node:
        node.output[:] = [raw if name == output.name else name for name in node.output]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:  # ReduceL2 took its axes as an attribute until opset 18, as an input from then on
        graph.initializer.append(helper.make_tensor("fp32_normalize_axes", TensorProto.INT64, [1], [1]))
        reduce = helper.make_node(
            "ReduceL2",
            [raw, "fp32_normalize_axes"],
            ["fp32_normalize_norm"],
            keepdims=1,
            name="fp32_normalize_l2",
        )
    else:
        reduce = helper.make_node(
            "ReduceL2", [raw], ["fp32_normalize_norm"], axes=[1], keepdims=1, name="fp32_normalize_l2"
        )
    graph.initializer.append(helper.make_tensor("fp32_normalize_eps", TensorProto.FLOAT, [], [1e-12]))
    graph.node.extend(
        [
            reduce,
            helper.make_node(
                "Max",
                ["fp32_normalize_norm", "fp32_normalize_eps"],
                ["fp32_normalize_floor"],
                name="fp32_normalize_max",
            ),
            helper.make_node("Div", [raw, "fp32_normalize_floor"], [output.name], name="fp32_normalize_div"),
        ]
    )


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
