"""The pipeline's config: the training config (flat, as for `embedgate train`) plus one section per later stage.

base_model: all-MiniLM-L6-v2
data: {path: path/to/scifact, split: train, eval_split: test}   # a table or a BEIR folder
export: {int8: true, fp16: auto}     # fp16 auto: a float16 graph per dim when the run's device is a CUDA GPU
evaluation: {split: test, backends: [onnx-fp32, onnx-int8]}   # add torch for the PyTorch reference
cache: {dir: null, enabled: true, max_gb: 2, max_age_days: 30}   # null dir = <output_dir>/../cache; LRU-pruned
gate: {policy: null}                  # null = the packaged default policy
promotion: {registry: registry, enabled: true, mode: immediate}   # or staged; webhook: https://...
compatibility: auto                   # or off, or {with: [v0001]}: also answer in older versions' spaces
memory: {gradient_checkpointing: auto}   # auto: on for CPU training on a machine under 16 GiB (half the peak RSS)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.config import (
    TrainConfig,
    config_from_mapping,
    format_validation_error,
    read_yaml_mapping,
)
from training.errors import ColumnMappingError, ConfigError, DataSettings

Backend = Literal["onnx-fp32", "onnx-int8", "torch"]

# Where a pipeline config sets its training table's type and column map: the fix a ColumnMappingError names.
DATA_SETTINGS = DataSettings(
    type="data.type: {value}",
    columns="data.columns in the config",
    columns_example="data: {columns: {anchor: question1, positive: question2}} in the config, or "
    "--set data.columns.anchor=question1 --set data.columns.positive=question2",
)


def worded_for_config(err: BaseException, config: PipelineConfig) -> BaseException:
    """`err` with a column-mapping fix in the config's terms (data.type, data.columns) when it is about the
    training data; about another file (an eval set) the fix is renaming its columns. Other errors unchanged."""
    if not isinstance(err, ColumnMappingError):
        return err
    return err.for_caller(DATA_SETTINGS if err.is_about(config.train.data.path) else None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportSection(_Section):
    dims: list[int] | None = None  # null = the training Matryoshka dims
    int8: bool = True
    # A float16 twin per dim for onnxruntime's CUDA provider, kept where cosine >= 0.999 to fp32. auto: when the
    # run's device resolves to a CUDA GPU. Not built on CPU by default: on MiniLM it added 58 s to a 99 s export and
    # 181 MB (half the fp32 graphs) to every run and registry version, for a graph the CPU provider runs no faster
    # than fp32 (docs/performance.md).
    fp16: bool | Literal["auto"] = "auto"

    def wants_fp16(self, device: str | None) -> bool:
        """Whether this run builds fp16 graphs; `device` is the training device setting (auto | cpu | cuda[:N])."""
        if self.fp16 != "auto":
            return bool(self.fp16)
        from training.device import resolve_device

        return resolve_device(device).is_cuda


class EvaluationSection(_Section):
    # A BEIR folder, or an STS table (scored pairs: gated on Spearman); null = the training data when it is an IR
    # folder, else held out from it (pairs-like data by anchor, STS data by sentence)
    data: Path | None = None
    holdout_fraction: float = Field(0.2, gt=0, lt=1)  # share of anchors (STS: pairs) held out
    split: str = "test"
    # The served graphs. torch (the SentenceTransformer itself) is an opt-in reference: the export already checks
    # every graph's parity to it, and it costs a third encoding of the corpus.
    backends: list[Backend] = ["onnx-fp32", "onnx-int8"]
    # The forgetting check: every run scores a general-domain STS table (sentence1, sentence2, score 0-5) so the
    # gate's general_domain check has evidence. null = the packaged set (training/data/general_sts); off with
    # general_domain: false.
    general_domain: bool = True
    general_sts: Path | None = None
    sts_limit: int | None = Field(1500, ge=10)


class GateSection(_Section):
    policy: Path | None = None


class PromotionSection(_Section):
    enabled: bool = True
    registry: Path = Path("registry")
    # immediate: the champion moves at once; staged: the version is servable by name and as `candidate`, and the
    # champion moves with `embedgate cutover` (docs/versions.md)
    mode: Literal["immediate", "staged"] = "immediate"
    webhook: str | None = (
        None  # POST each promotion event here, signed with HMAC-SHA256 of webhook_secret_env
    )
    webhook_secret_env: str = "EMBEDGATE_WEBHOOK_SECRET"
    reference_queries: int = Field(5000, ge=10)  # drift reference: up to this many of the domain's queries
    reference_corpus: int = Field(1000, ge=10)


class MemorySection(_Section):
    """Peak memory of the training step. Gradient checkpointing keeps only each layer's input and recomputes the rest
    in the backward pass: the same weights, about half the step's peak RSS (MiniLM, demo batch: 3.8 -> 2.0 GB) for
    ~25-32% more CPU per step. auto: on when training runs on the CPU of a machine with less than
    CHECKPOINT_BELOW_GIB of RAM (a 4-8 GB CI runner, where the 4-6 GB peak runs out first); off on a larger machine
    and on a GPU, where it would only cost time."""

    gradient_checkpointing: bool | Literal["auto"] = "auto"

    def wants_checkpointing(self, device: str | None, total_ram_gib: float | None = None) -> bool:
        """`device` is the training device setting (auto | cpu | cuda[:N]); `total_ram_gib` (default: this
        machine's physical memory) decides `auto` on the CPU."""
        if self.gradient_checkpointing != "auto":
            return bool(self.gradient_checkpointing)
        from training.device import resolve_device

        if resolve_device(device).is_cuda:
            return False
        return (total_ram_gib if total_ram_gib is not None else _total_ram_gib()) < CHECKPOINT_BELOW_GIB


CHECKPOINT_BELOW_GIB = 16.0


def _total_ram_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


class CompatibilitySection(_Section):
    """Backward-compatible upgrades (gates/compat/, docs/versions.md). auto: when the registry has a champion, the
    run also answers in the champion's space and in every space the champion answers in; off: never; `with`: these
    versions' spaces. A space is offered only when it beats the old version's own queries beyond noise."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    mode: Literal["auto", "off"] = "auto"
    versions: list[str] | None = Field(None, alias="with")


class CacheSection(_Section):
    """Embeddings (and the base model's export) kept between runs: an unchanged baseline is never re-encoded."""

    enabled: bool = True
    dir: Path | None = None  # null = a `cache` folder beside output_dir (artifacts/cache for artifacts/runs)
    # Bounds applied after every run, least recently used first (gates/cache_prune.py); null = no bound.
    max_gb: float | None = Field(2.0, gt=0)
    max_age_days: float | None = Field(30.0, gt=0)


class TrackingSection(_Section):
    """Optional MLflow tracking (gates/pipeline/tracking.py); null mlflow = off."""

    mlflow: str | None = None  # tracking server URI, e.g. http://127.0.0.1:5000
    experiment: str = Field("embedgate", min_length=1)
    registered_model: str = Field(
        "embedgate", min_length=1
    )  # MLflow model registry name for promoted versions


class PipelineConfig(_Section):
    train: TrainConfig
    export: ExportSection = ExportSection()
    evaluation: EvaluationSection = EvaluationSection()
    gate: GateSection = GateSection()
    promotion: PromotionSection = PromotionSection()
    compatibility: CompatibilitySection = CompatibilitySection()
    cache: CacheSection = CacheSection()
    tracking: TrackingSection = TrackingSection()
    memory: MemorySection = MemorySection()

    def needs_holdout(self) -> bool:
        """No BEIR folder to evaluate on: the pipeline holds out part of the training table (training/data/holdout.py)."""
        # A user-given eval set (data.eval_path) is never replaced by a split of the training data.
        return (
            self.evaluation.data is None
            and self.train.data.eval_path is None
            and not _is_beir(self.train.data.path)
        )

    def with_holdout(self, train_path: Path, eval_data: Path) -> PipelineConfig:
        """This config training on the held-out split's train rows and evaluating on its eval set (a BEIR folder,
        or an STS table of held-out scored pairs)."""
        data = self.train.data.model_copy(
            update={"path": train_path, "columns": None, "eval_path": eval_data, "eval_split": "test"}
        )
        return self.model_copy(
            update={
                "train": self.train.model_copy(update={"data": data}),
                "evaluation": self.evaluation.model_copy(update={"data": eval_data, "split": "test"}),
            }
        )

    def general_sts(self) -> Path | None:
        """The STS table the forgetting check scores, or None when the check is turned off."""
        if not self.evaluation.general_domain:
            return None
        from training.data import GENERAL_STS

        return self.evaluation.general_sts or GENERAL_STS

    def evaluation_data(self) -> Path:
        if self.evaluation.data is not None:
            return self.evaluation.data
        if _is_beir(self.train.data.path):
            return Path(self.train.data.path)
        raise ConfigError(
            "evaluation.data is required: a BEIR folder with the eval split (the training data "
            f"{self.train.data.path} is a table, not a BEIR folder)"
        )

    def cache_dir(self) -> Path | None:
        if not self.cache.enabled:
            return None
        return self.cache.dir if self.cache.dir is not None else Path(self.train.output_dir).parent / "cache"


def _is_beir(path: Path) -> bool:
    from training.data.hf_datasets import is_hf_source

    return Path(path).is_dir() and not is_hf_source(path)  # a save_to_disk folder is a table


SECTIONS = {
    "export": ExportSection,
    "evaluation": EvaluationSection,
    "gate": GateSection,
    "promotion": PromotionSection,
    "compatibility": CompatibilitySection,
    "cache": CacheSection,
    "tracking": TrackingSection,
    "memory": MemorySection,
}


def load_pipeline_config(path: Path | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Split the stage sections off the YAML; the rest is the training config (validated by training)."""
    raw = read_yaml_mapping(path) if path is not None else {}
    overrides = dict(overrides or {})
    sections = {}
    for name in SECTIONS:
        section = raw.pop(name, None) or {}
        if name == "compatibility" and isinstance(section, str | bool):  # `compatibility: auto | off`
            section = {"mode": "off" if section in (False, "off") else section}
        if not isinstance(section, dict):
            raise ConfigError(
                f"invalid config {path or '(flags)'}: section '{name}' must be a mapping of "
                f"{', '.join(SECTIONS[name].model_fields)}, got {type(section).__name__} "
                f"{section!r:.60}"
            )
        sections[name] = dict(section)
    for key in list(overrides):
        head, _, rest = key.partition(".")
        if head in SECTIONS and rest:
            sections[head][rest] = overrides.pop(key)
    base = Path(path).parent if path is not None else Path.cwd()
    for section in sections.values():
        for key, value in section.items():  # relative paths in a config file are relative to the file
            if (
                key in {"data", "general_sts", "policy"}
                and isinstance(value, str)
                and not Path(value).is_absolute()
            ):
                candidate = base / value
                section[key] = (
                    str(candidate.resolve()) if candidate.exists() and not Path(value).exists() else value
                )
    source = str(path or "(flags)")
    train = config_from_mapping(raw, source, base if path is not None else None, overrides)
    try:
        return PipelineConfig(train=train, **sections)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, PipelineConfig)) from None
