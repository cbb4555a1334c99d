"""The training configuration: one typed object, from a YAML file and/or CLI flags, validated at load.

    base_model: all-MiniLM-L6-v2        # a local SentenceTransformer folder, or this name (the bundled model)
    prompts: {query: "query: ", document: "passage: "}   # null = the model's own (config_sentence_transformers.json)
    data: {path: data/legal_lay, type: ir, split: train}   # or a datasets save_to_disk folder, or hf://owner/name
    loss: auto                          # auto | mnrl | cached_mnrl | cosent | triplet
    matryoshka_dims: [384, 256, 128, 64]
    epochs: null                        # null = chosen from the data (see training/finetune/defaults.py)

Fields left `null` are resolved from the data by `training.finetune.defaults.resolve`; the resolved values are what the
run records in its `config.yaml`. Errors name the field, the value, and the allowed range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.data.formats import DatasetType
from training.errors import ConfigError

DEFAULT_BASE_MODEL = "all-MiniLM-L6-v2"

LossName = Literal["auto", "mnrl", "cached_mnrl", "cosent", "triplet"]
MiningStrategy = Literal[
    "none",
    "auto",
    "random",
    "bm25",
    "model",
    "curriculum",
    "contradiction",
    "partial_match",
    "domain_confusion",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataConfig(_Strict):
    path: Path
    type: DatasetType | None = None  # detected from the columns / layout when null
    columns: dict[str, str] | None = None  # canonical -> source column
    split: str = "train"  # qrels split used for training (IR)
    eval_path: Path | None = None  # eval set: leakage check and evaluation (IR: defaults to `path`)
    eval_split: str = "test"


class MiningConfig(_Strict):
    """Hard-negative mining. Names follow sentence_transformers.util.mine_hard_negatives."""

    strategy: MiningStrategy = "auto"  # auto: model-mined negatives for pairs / IR data, none otherwise
    num_negatives: int = Field(1, ge=1, le=32)
    range_min: int = Field(
        0, ge=0, le=1000
    )  # skip this many top-ranked candidates (likely unlabelled positives)
    range_max: int = Field(50, ge=1, le=1000)  # consider candidates up to this rank
    relative_margin: float = Field(0.05, ge=0.0, lt=1.0)  # drop negatives scoring > (1 - margin) * positive
    sampling_strategy: Literal["top", "random"] = "top"
    domain_confusion_path: Path | None = None  # texts from a related domain, for strategy domain_confusion

    @model_validator(mode="after")
    def _range(self) -> MiningConfig:
        if self.range_max <= self.range_min:
            raise ValueError(
                f"range_max ({self.range_max}) must be greater than range_min ({self.range_min})"
            )
        if self.strategy == "domain_confusion" and self.domain_confusion_path is None:
            raise ValueError(
                "strategy domain_confusion needs domain_confusion_path: a file of texts from a "
                "related but different domain"
            )
        return self


class PromptsConfig(_Strict):
    """Prepended to queries / documents in training, mining, evaluation and serving (training/prompts.py).
    null = the base model's own prompt for that role; "" = no prompt."""

    query: str | None = None
    document: str | None = None


class TrainConfig(_Strict):
    base_model: str = DEFAULT_BASE_MODEL
    data: DataConfig
    loss: LossName = "auto"
    cached: bool = False  # CachedMNRL: more in-batch negatives at bounded memory
    mini_batch_size: int | None = Field(None, ge=1, le=4096)  # CachedMNRL's per-forward size
    matryoshka: bool = True
    matryoshka_dims: list[int] | None = None  # null = model dim and halvings down to 64
    matryoshka_weights: list[float] | None = None  # null = chosen in defaults.py
    # Matryoshka rotation before truncation: PCA refined on the training pairs (training/matryoshka/rotation.py). auto = kept
    # if dev improves; pca = the same without the refinement; on = always kept; off = none.
    rotation: Literal["auto", "pca", "on", "off"] = "auto"
    # With rotation auto: a Matryoshka-Adaptor (a linear map from the chosen rotation, trained on the pairs) is the
    # last candidate, kept only when dev gains beyond noise and no dim loses beyond noise; off = never tried.
    adaptor: Literal["auto", "off"] = "auto"
    epochs: float | None = Field(None, gt=0, le=100)
    batch_size: int | None = Field(None, ge=2, le=65536)  # in-batch negatives need >= 2
    learning_rate: float | None = Field(None, gt=0, le=1e-2)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0, le=1)
    max_seq_length: int | None = Field(None, ge=8, le=8192)
    seed: int = Field(42, ge=0)
    # held out by query from train for the dev decisions; raised towards 50 queries on small sets (prepare.py)
    dev_fraction: float = Field(0.1, ge=0, lt=0.5)
    logging_steps: int = Field(5, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    # Stop once dev has not improved for early_stopping_patience evaluations and keep the best checkpoint
    # (training/finetune/early_stopping.py); null patience = chosen from the run's schedule and dev size.
    early_stopping: bool = True
    early_stopping_patience: int | None = Field(None, ge=1, le=100)
    max_steps: int | None = Field(None, ge=1)  # cap for smoke runs and tests
    mining: MiningConfig = MiningConfig()
    prompts: PromptsConfig | None = None  # query/document prompts; null = the base model's own
    output_dir: Path = Path("artifacts/runs")
    device: str | None = (
        None  # auto | cpu | cuda | cuda:N; null = $EMBEDGATE_DEVICE, else auto (training/device.py)
    )
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims(cls, dims: list[int] | None) -> list[int] | None:
        if dims is None:
            return None
        if not dims:
            raise ValueError("expected a non-empty list of dims, e.g. [384, 256, 128, 64]")
        bad = [d for d in dims if d <= 0]
        if bad:
            raise ValueError(f"dims must be positive, got {bad}")
        if len(set(dims)) != len(dims):
            raise ValueError(f"dims must be unique, got {dims}")
        return sorted(dims, reverse=True)

    @model_validator(mode="after")
    def _weights(self) -> TrainConfig:
        if self.matryoshka_weights is not None:
            if self.matryoshka_dims is None or len(self.matryoshka_weights) != len(self.matryoshka_dims):
                raise ValueError(
                    f"matryoshka_weights needs one weight per matryoshka_dims entry; got "
                    f"{self.matryoshka_weights} for dims {self.matryoshka_dims}"
                )
            if any(w <= 0 for w in self.matryoshka_weights):
                raise ValueError(f"matryoshka_weights must be positive, got {self.matryoshka_weights}")
        return self

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_validation_error(err: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    """pydantic's report -> "field 'epochs': got -1; Input should be greater than 0" lines."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(e["loc"], root or TrainConfig)
            lines.append(f"unknown field '{where}' (allowed: {allowed})")
        elif e["type"] == "missing":
            lines.append(f"field '{where}' is required")
        else:
            lines.append(f"field '{where}': got {got!r}; {msg}")
    return f"invalid config {source}: " + "; ".join(lines)


def _allowed_fields(loc, root: type[BaseModel]) -> str:
    model = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        # An optional section (`PromptsConfig | None`) names its model among the union's members.
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
    return ", ".join(model.model_fields)


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """`mining.num_negatives=3` style override into a nested dict."""
    keys = dotted.split(".")
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section of the config")
    node[keys[-1]] = value


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; errors name the file and line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} not found (relative paths are from {Path.cwd()}); pass an existing "
            f"YAML file (gates/demo.yaml is a pipeline config to start from)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8 YAML"
        ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of config fields, got {type(raw).__name__}")
    return raw


def config_from_mapping(
    raw: dict[str, Any],
    source: str = "(flags)",
    base_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """A mapping (+ dotted overrides) -> TrainConfig. Relative data paths resolve against `base_dir` (the config
    file's folder) when they exist there, so configs can travel with their data."""
    raw = dict(raw)
    data = raw.get("data")
    if isinstance(data, dict) and base_dir is not None:
        data = dict(data)
        for key in ("path", "eval_path"):
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                candidate = base_dir / data[key]
                if candidate.exists() and not Path(data[key]).exists():
                    data[key] = str(candidate.resolve())
        raw["data"] = data
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(raw, dotted, value)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file (optional) + dotted overrides -> TrainConfig, or ConfigError naming field, value and range."""
    if path is None:
        return config_from_mapping({}, "(flags)", None, overrides)
    return config_from_mapping(read_yaml_mapping(path), str(path), Path(path).parent, overrides)
