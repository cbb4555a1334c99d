"""One self-contained ONNX graph per Matryoshka dim: token ids in, a unit-length `sentence_embedding` out.

sentence-transformers' own ONNX export holds only the transformer and leaves pooling to Python; ours folds the
whole SentenceTransformer pipeline into the graph, so the served runtime is tokenize -> run, with nothing left
to get subtly wrong:

    input_ids, attention_mask (int64 [batch, seq])
      -> transformer (token_type_ids fed as zeros inside, when the model takes them)
      -> the model's own Pooling / Dense / Normalize modules, exactly as configured
      -> [:, :dim] -> L2 normalise -> sentence_embedding (float32 [batch, dim])

Only a model of the shape Transformer -> Pooling -> (Dense | Normalize)* is accepted; anything else is refused
with what was found, because a graph that silently differs from the model would be gated and served.

This is the one module that touches the torch exporter, so moving to transformers 5 is a change here only.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.errors import ExportError

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"  # not "embedding": that name collides with an internal node of BERT graphs
# Every mode of sentence-transformers' Pooling that reads only token embeddings and the mask: weightedmean and
# lasttoken (decoder-style embedders) included; each is traced from ST's own Pooling module, so it is ST's code.
SUPPORTED_POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
SUPPORTED_SHAPE = "Transformer -> Pooling -> (Dense | Normalize)*"
# The legacy TorchScript exporter: it needs no onnxscript and reproduced ST to cosine 0.9999999 (GUIDE 6).
MIN_OPSET, MAX_OPSET = 14, 20  # 14: first opset with the ops used by scaled-dot-product attention


@dataclass(frozen=True)
class ModelSpec:
    """What the export found in the SentenceTransformer: everything the runtime must reproduce."""

    full_dim: int
    max_seq_length: int
    pooling: tuple[str, ...]
    modules: tuple[str, ...]
    normalize: bool
    token_type_ids: bool
    architecture: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_model(model: Any, source: Path) -> ModelSpec:
    """Check that `model` (a loaded SentenceTransformer) can be exported faithfully and describe it."""
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    modules = list(model)
    names = tuple(type(module).__name__ for module in modules)
    found = " -> ".join(names) or "no modules"

    def refuse(problem: str, fix: str) -> ExportError:
        return ExportError(
            f"{source}: cannot export this model faithfully: {problem} (modules: {found}); "
            f"supported: {SUPPORTED_SHAPE} with pooling in {SUPPORTED_POOLING_MODES}. {fix}"
        )

    if len(modules) < 2 or not isinstance(modules[0], Transformer) or not isinstance(modules[1], Pooling):
        raise refuse(
            "expected a Transformer followed by a Pooling module",
            "Rebuild the model as Transformer -> Pooling (-> Normalize) and save it again.",
        )
    for index, module in enumerate(modules[2:], start=2):
        if isinstance(module, Dense):
            if (module.module_input_name, module.module_output_name) != (OUTPUT_NAME, OUTPUT_NAME):
                raise refuse(
                    f"module {index} (Dense) maps {module.module_input_name!r} -> "
                    f"{module.module_output_name!r}, expected {OUTPUT_NAME!r} -> {OUTPUT_NAME!r}",
                    "Only a Dense head on the pooled sentence embedding can be exported.",
                )
        elif not isinstance(module, Normalize):
            raise refuse(
                f"module {index} is {type(module).__name__}",
                "Remove the module, or serve this model with sentence-transformers instead.",
            )

    transformer, pooling = modules[0], modules[1]
    text_config = transformer.modality_config.get("text", {})
    if (
        transformer.transformer_task != "feature-extraction"
        or text_config.get("method") != "forward"
        or text_config.get("method_output_name") != "last_hidden_state"
    ):
        raise refuse(
            f"the Transformer is a {transformer.transformer_task!r} model with text config "
            f"{text_config}, expected a 'feature-extraction' encoder returning last_hidden_state",
            "Export a text encoder (BERT, MiniLM, MPNet, ...).",
        )
    tokenizer = transformer.tokenizer
    if tokenizer is None or not tokenizer.is_fast:
        raise refuse(
            f"tokenizer {type(tokenizer).__name__} has no tokenizer.json (not a fast tokenizer)",
            "Convert it with transformers' AutoTokenizer.from_pretrained(..., use_fast=True) and save.",
        )
    unknown_inputs = set(tokenizer.model_input_names) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown_inputs:
        raise refuse(
            f"the tokenizer produces inputs {sorted(unknown_inputs)} that the graph cannot take",
            "Only input_ids, attention_mask and token_type_ids are supported.",
        )
    if tokenizer.padding_side != "right":
        raise refuse(
            f"the tokenizer pads on the {tokenizer.padding_side!r}, the runtime pads on the right",
            "Set tokenizer.padding_side = 'right' and save the model again.",
        )
    modes = (pooling.pooling_mode,) if isinstance(pooling.pooling_mode, str) else tuple(pooling.pooling_mode)
    unsupported = [mode for mode in modes if mode not in SUPPORTED_POOLING_MODES]
    if unsupported:
        raise refuse(f"pooling mode {unsupported} is not supported", "Use a supported pooling mode.")
    max_seq_length = transformer.max_seq_length
    if not isinstance(max_seq_length, int) or max_seq_length <= 0 or max_seq_length > 100_000:
        raise refuse(
            f"max_seq_length is {max_seq_length!r}, expected a positive token count",
            "Set model.max_seq_length (e.g. 256) and save the model again.",
        )
    if not getattr(pooling, "include_prompt", True):
        raise refuse(
            "the Pooling module excludes prompt tokens (include_prompt=False), which needs the prompt "
            "length at run time",
            "Set pooling include_prompt to true, or serve this model with sentence-transformers.",
        )
    prompt = model.prompts.get(model.default_prompt_name, "") if model.default_prompt_name else ""
    if prompt:
        raise refuse(
            f"the model prepends the default prompt {prompt!r} to every text",
            "The ONNX runtime applies no prompts: clear default_prompt_name, or add the prompt to texts.",
        )

    return ModelSpec(
        full_dim=int(model.get_embedding_dimension()),
        max_seq_length=int(max_seq_length),
        pooling=modes,
        modules=names,
        normalize=any(isinstance(module, Normalize) for module in modules),
        token_type_ids="token_type_ids" in tokenizer.model_input_names,
        architecture=type(transformer.auto_model).__name__,
    )


def export_graph(model: Any, spec: ModelSpec, dim: int, path: Path, opset: int) -> None:
    """Write the graph for `dim` to `path` (fp32). The model must have passed `inspect_model`."""
    import torch

    wrapper = _build_wrapper(model, spec, dim).eval()
    # Two rows of different lengths: the traced graph must take the padded, masked path, never an
    # "all tokens are real" shortcut that a mask of ones could let the tracer bake in.
    batch = model[0].tokenizer(
        ["the patient took the tablet twice a day", "hi"], padding=True, return_tensors="pt"
    )
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    axes = {0: "batch", 1: "sequence"}
    # The tracer warns about every Python-level shape check it freezes (e.g. "mask width == sequence width",
    # true by construction here); the parity check on padded batches of varied lengths is the real guard.
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper,
            (input_ids, attention_mask),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _declare_output_dim(path, dim)


def _declare_output_dim(path: Path, dim: int) -> None:
    """Write the embedding size into the graph's output shape. The tracer leaves it symbolic (e.g.
    'Divsentence_embedding_dim_1') for sliced dims, and the runtime reads the served dim from this shape."""
    import onnx

    model = onnx.load(str(path))
    (output,) = model.graph.output
    output.type.tensor_type.shape.dim[1].dim_value = dim  # setting the value clears the symbolic name
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _build_wrapper(model: Any, spec: ModelSpec, dim: int) -> Any:
    import torch

    class SentenceEmbeddingGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model[0].auto_model
            # The model's own heads, so pooling and Dense behave exactly as configured and trained.
            self.heads = torch.nn.ModuleList(list(model)[1:])

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if spec.token_type_ids:
                # Single-sentence inputs always have token type 0; feeding them here keeps clients to two inputs.
                inputs["token_type_ids"] = torch.zeros_like(input_ids)
            hidden = self.encoder(**inputs, return_dict=True).last_hidden_state
            features = {"token_embeddings": hidden, "attention_mask": attention_mask}
            for head in self.heads:
                features = head(features)
            truncated = features[OUTPUT_NAME][:, :dim]
            return torch.nn.functional.normalize(truncated, p=2.0, dim=1)

    return SentenceEmbeddingGraph()
