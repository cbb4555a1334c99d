"""Serving settings: every knob is an `EMBEDGATE_<FIELD>` environment variable, validated once at start-up.

    EMBEDGATE_REGISTRY=registry EMBEDGATE_MAX_INPUTS_PER_REQUEST=64 bentoml serve service.app:EmbedgateService

`ServeSettings.from_env()` reads them; a bad value stops the service with a message naming the variable, the value
and what is expected. `describe()` is what /info and docs/serving.md list: variable, value, meaning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from service.batching.batch_plan import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS
from service.errors import EmbedgateServiceError

ENV_PREFIX = "EMBEDGATE_"
# BentoML's own per-request timer is set to this ceiling, so our timeout (with its JSON 504) always fires first.
MAX_REQUEST_TIMEOUT_S = 3600.0


class SettingsError(EmbedgateServiceError):
    """An EMBEDGATE_* variable holds a value the service cannot run with."""


class ServeSettings(BaseModel):
    """What the served process needs to know. Field `x` is read from `EMBEDGATE_X`; units are in the names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: Path | str = Field(
        Path("registry"),
        description=(
            "registry root to serve the champion from (hot-swapped on promote/rollback): a folder, or an object-store "
            "URL such as s3://bucket/prefix (docs/registry.md); when this folder does not "
            "exist and EMBEDGATE_REGISTRY is unset, the BentoML model store's EMBEDGATE_MODEL_TAG is served"
        ),
    )

    @field_validator("registry", mode="before")
    @classmethod
    def _registry_location(cls, value: Any) -> Path | str:
        # A URL stays text (Path would fold s3://b into s3:/b); a folder (or file://) becomes a Path.
        text = str(value)
        if "://" in text and not text.startswith("file://"):
            return text
        return Path(text[len("file://") :]) if text.startswith("file://") else Path(value)

    model_tag: str = Field(
        "embedgate-embedder:latest",
        min_length=1,
        description=("BentoML model store tag served when there is no registry (what a built Bento carries)"),
    )
    model_name: str = Field(
        "embedgate-embedder",
        min_length=1,
        description=(
            "the name clients pass as `model`; `<name>:<version>` and the bare version are accepted too"
        ),
    )
    precision: Literal["fp32", "int8", "fp16"] | None = Field(
        None,
        description=(
            "graph precision to serve; unset: the version's serve_precision (manifest), else fp32. fp16 is "
            "for EMBEDGATE_DEVICE=cuda (exported with --fp16); onnxruntime's CPU provider runs it, no faster than fp32"
        ),
    )
    threads: int | None = Field(
        None, ge=1, description=("onnxruntime intra-op threads; unset: one per physical core")
    )
    api_key: SecretStr | None = Field(
        None,
        description=(
            "when set, every model route needs `Authorization: Bearer <key>`; health routes stay open"
        ),
    )
    max_inputs_per_request: int = Field(
        256,
        ge=1,
        description=("texts per request (422 above); 256 lets OpenAI-style clients send their usual chunks"),
    )
    max_input_chars: int = Field(
        32_768,
        ge=1,
        description=("characters per text (422 above): bounds tokenisation work before truncation"),
    )
    max_request_tokens: int = Field(
        65_536,
        ge=1,
        description=(
            "tokens one request may make the model read, after truncation (422 above): bounds its memory; the "
            "default lets 256 texts of 256 tokens (MiniLM's maximum) through"
        ),
    )
    max_payload_bytes: int = Field(
        2_000_000,
        ge=1,
        description=(
            "request body size (413 above), checked from Content-Length and while streaming, before parsing"
        ),
    )
    max_concurrent_requests: int = Field(
        128, ge=1, description=("model requests in flight per worker process (429 above)")
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        le=MAX_REQUEST_TIMEOUT_S,
        description=("seconds from accepting a model request to its answer (504 after)"),
    )
    truncate: bool = Field(
        True,
        description=(
            "cut texts over the model's max tokens (true) or answer 422 (false); /embed's `truncate` overrides it"
        ),
    )
    max_batch_size: int = Field(
        32,
        ge=1,
        description=("texts per model run at most; concurrent requests are batched together up to this"),
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "padded tokens per model run (texts x longest text) at most; texts of similar length share a run. "
            "Bounds one run's time, so short requests never wait long behind documents (a longer text runs alone). "
            f"Default: {CPU_BATCH_TOKENS} on the CPU (batching longer runs buys no speed there and a 4-passage run "
            f"kept queries waiting), {GPU_BATCH_TOKENS} on a GPU (as text-embeddings-inference)"
        ),
    )
    max_batch_delay_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description=(
            "how long a batch that is not full waits for more texts; 0: run whatever is queued when the model is "
            "free (under load texts queue while a batch runs, so batches fill without waiting)"
        ),
    )
    split_calls_in_flight: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "split mode (embedgate serve --http-workers N) only: calls to the model process one HTTP worker keeps "
            "open; the rows queued meanwhile go in its next call, so fewer calls carry more requests each"
        ),
    )
    poll_interval_s: float = Field(
        5.0,
        gt=0,
        description=("how often the registry's champion pointer is checked for a promotion or rollback"),
    )
    verify_interval_s: float = Field(
        60.0,
        gt=0,
        description=(
            "how often the served version's files are hashed against its manifest again (changed or gone: /ready 503, "
            "the loaded model keeps serving)"
        ),
    )
    max_header_bytes: int = Field(
        16_384,
        ge=1024,
        description=("request line plus headers, in bytes (431 and the connection closed above)"),
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "seconds from a request's first byte until its headers are complete (408 and closed after)"
        ),
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description=("seconds an idle connection (new, or between requests) stays open")
    )
    max_connections: int = Field(
        512, ge=1, description=("open connections per worker process; one more is answered 503 and closed")
    )
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        le=MAX_REQUEST_TIMEOUT_S,
        description=(
            "on SIGTERM/SIGINT, how long in-flight requests may take to finish before the worker cancels them "
            "(`embedgate serve` passes it to bentoml as --timeout-graceful-shutdown)"
        ),
    )
    keep_versions: int = Field(
        2,
        ge=0,
        description=(
            "newest registry versions kept loaded beside the champion and the candidate, so clients pinned to them "
            "(`model: v0003`) never wait for a load (docs/versions.md)"
        ),
    )
    on_demand_memory_mb: float = Field(
        1024.0,
        gt=0,
        description=(
            "graph memory for older versions loaded on demand; least recently used ones are evicted to stay under"
        ),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """Settings from `EMBEDGATE_*` variables (default: the process environment); empty values mean unset."""
        return settings_from_env(
            cls, ENV_PREFIX, environ, SettingsError, "serving settings", "docs/serving.md"
        )

    def registry_was_chosen(self, environ: Mapping[str, str] | None = None) -> bool:
        """True when EMBEDGATE_REGISTRY was set explicitly (then we wait for it rather than use the model store)."""
        environ = os.environ if environ is None else environ
        return bool(environ.get(env_var("registry"), "").strip())

    def describe(self) -> list[dict[str, Any]]:
        """Every setting as {env, value, default, description}, the API key redacted (for /info and the docs)."""
        return describe_settings(self, ENV_PREFIX)


def env_var(field_name: str, prefix: str = ENV_PREFIX) -> str:
    return prefix + field_name.upper()


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def settings_from_env(
    cls: type[SettingsT],
    prefix: str,
    environ: Mapping[str, str] | None,
    error: type[EmbedgateServiceError],
    what: str,
    docs: str,
) -> SettingsT:
    """`cls` from `<prefix><FIELD>` variables (default: the process environment; empty values mean unset), or
    `error` naming each bad variable, its value and what is expected."""
    environ = os.environ if environ is None else environ
    values = {
        name: environ[env_var(name, prefix)].strip()
        for name in cls.model_fields
        if environ.get(env_var(name, prefix), "").strip()
    }
    try:
        return cls(**values)
    except ValidationError as err:
        problems = "; ".join(
            f"{env_var(str(e['loc'][0]), prefix)}={values.get(str(e['loc'][0]))!r}: {e['msg']}"
            for e in err.errors()
        )
        raise error(
            f"invalid {what}: {problems}. Fix or unset the variable (defaults and meanings: {docs})"
        ) from None


def describe_settings(settings: BaseModel, prefix: str) -> list[dict[str, Any]]:
    """Every field as {env, value, default, description}; secrets redacted, paths as text."""
    rows = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = "(set)"
        elif isinstance(value, Path):
            value = str(value)
        default = str(field.default) if isinstance(field.default, Path) else field.default
        rows.append(
            {
                "env": env_var(name, prefix),
                "value": value,
                "default": default,
                "description": field.description,
            }
        )
    return rows
