"""Drift settings: each knob is an `EMBEDGATE_DRIFT_<FIELD>` environment variable, validated once at start-up.

    EMBEDGATE_DRIFT_SAMPLE_RATE=0.1 EMBEDGATE_DRIFT_DIR=drift bentoml serve service.app:EmbedgateService

`EMBEDGATE_DRIFT_SAMPLE_RATE=0` switches capture (and so the drift monitor) off. `EMBEDGATE_DRIFT_DIR` may be an
object-store URL (`s3://bucket/drift`): replicas then upload their windows there, and `embedgate drift` judges
them from a local copy (`cache_dir`), writing the verdicts back (service/drift/object_windows.py, object_mirror.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.errors import EmbedgateServiceError
from service.settings import describe_settings, settings_from_env
from service.storage.object_store import is_object_url

ENV_PREFIX = "EMBEDGATE_DRIFT_"
# The windows a reference is calibrated for by default (`build_reference(window_rows=...)`): keep the two equal.
DEFAULT_WINDOW_ROWS = 500
# An open window not updated for this many flush intervals belongs to a dead (or stalled) writer: any host may seal
# it. Several intervals, so that a writer slowed by a busy machine or a slow store is never taken for dead.
LEASE_FLUSHES = 6


class DriftSettingsError(EmbedgateServiceError):
    """An EMBEDGATE_DRIFT_* variable holds a value the drift monitor cannot run with."""


class DriftSettings(BaseModel):
    """Where captured rows go, how many, and when the monitor alerts. Field `x` is `EMBEDGATE_DRIFT_X`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description=(
            "share of served texts captured for drift (each text drawn independently); 0 switches capture off"
        ),
    )
    dir: Path | str = Field(
        Path("drift"),
        description=(
            "drift folder: windows/ (captured rows), summaries/ (one JSON per window), workspace/ (Evidently); or "
            "an object-store URL (s3://bucket/prefix, credentials from the standard AWS_* environment)"
        ),
    )

    @field_validator("dir", mode="before")
    @classmethod
    def _dir_location(cls, value: Any) -> Path | str:
        # A URL stays text (Path would fold s3://b into s3:/b); a folder (or file://) becomes a Path.
        text = str(value)
        if is_object_url(text):
            return text.rstrip("/")
        return Path(text[len("file://") :]) if text.startswith("file://") else Path(value)

    window_rows: int = Field(
        DEFAULT_WINDOW_ROWS,
        ge=10,
        le=100_000,
        description=("captured rows per window file; a window is compared to the reference once it is full"),
    )
    keep_windows: int = Field(
        48,
        ge=1,
        le=100_000,
        description=(
            "window files kept on disk (oldest deleted first): disk use is bounded by keep_windows x window_rows rows"
        ),
    )
    queue_size: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description=(
            "requests waiting for the writer thread; when full, new samples are dropped and counted, never waited for"
        ),
    )
    alert_windows: int = Field(
        3,
        ge=1,
        le=1000,
        description=(
            "consecutive drifted windows that raise the alert (JSON warning log, `embedgate drift` exit 1)"
        ),
    )
    interval_s: float = Field(
        60.0, gt=0, description="how often the service's monitor looks for full windows"
    )
    monitor: bool = Field(
        True,
        description=(
            "judge full windows inside the service (a background thread); false: capture only, and judge them with a "
            "scheduled `embedgate drift`"
        ),
    )
    flush_interval_s: float = Field(
        10.0,
        ge=0.1,
        le=3600,
        description=(
            "how often a writer makes its open window visible (object store: uploads it; a folder: touches it); an "
            "open window not updated for 6 x this (the lease) is sealed by any host, so a dead replica's rows are "
            "judged"
        ),
    )
    cache_dir: Path | None = Field(
        None,
        description=(
            "local copy of an object-store drift folder, for `embedgate drift` and `embedgate dashboard` "
            "(default ~/.cache/embedgate/drift/<hash of the URL>); unused for a folder"
        ),
    )
    keep_snapshots: int = Field(
        500,
        ge=1,
        description=("Evidently snapshots kept per model version in the workspace (oldest deleted first)"),
    )

    texts: Literal["keep", "hash", "drop"] = Field(
        "keep",
        description=(
            "what a captured row keeps of its text once the descriptors are computed: keep (the novel queries of a "
            "window can be read and exported for labelling), hash (sha256 only: repeats still group, nothing "
            "readable), drop (embeddings and descriptors only)"
        ),
    )
    retention_days: float = Field(
        30.0,
        ge=0,
        description=(
            "windows, their verdicts (which list the novel queries) and snapshots older than this many days are "
            "deleted by the judge; 0 keeps them until keep_windows / keep_snapshots rotate them out"
        ),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DriftSettings:
        """Settings from `EMBEDGATE_DRIFT_*` variables (default: the process environment); empty means unset."""
        return settings_from_env(
            cls, ENV_PREFIX, environ, DriftSettingsError, "drift settings", "docs/drift.md"
        )

    @property
    def on_object_store(self) -> bool:
        return isinstance(self.dir, str)

    @property
    def lease_s(self) -> float:
        """How long an open window may go without an update before another host may seal it."""
        return LEASE_FLUSHES * self.flush_interval_s

    @property
    def local_dir(self) -> Path:
        """The folder itself, or for a URL its local copy (what the judge and the dashboard read)."""
        if not self.on_object_store:
            return Path(self.dir)
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embedgate" / "drift"
        return base / hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]

    @property
    def windows_dir(self) -> Path:
        return self.local_dir / "windows"

    @property
    def summaries_dir(self) -> Path:
        return self.local_dir / "summaries"

    @property
    def workspace_dir(self) -> Path:
        return self.local_dir / "workspace"

    def describe(self) -> list[dict[str, Any]]:
        """Every setting as {env, value, default, description} (for /info and docs/drift.md)."""
        return describe_settings(self, ENV_PREFIX)
