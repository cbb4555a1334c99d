"""Drift settings: each knob is an `EMBEDGATE_DRIFT_<FIELD>` environment variable, validated once at start-up.

    EMBEDGATE_DRIFT_SAMPLE_RATE=0.1 EMBEDGATE_DRIFT_DIR=drift bentoml serve service.app:EmbedgateService

`EMBEDGATE_DRIFT_SAMPLE_RATE=0` switches capture (and so the drift monitor) off.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.errors import EmbedgateServiceError
from service.settings import describe_settings, settings_from_env

ENV_PREFIX = "EMBEDGATE_DRIFT_"
# The windows a reference is calibrated for by default (`build_reference(window_rows=...)`): keep the two equal.
DEFAULT_WINDOW_ROWS = 500


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
    dir: Path = Field(
        Path("drift"),
        description=(
            "drift folder: windows/ (captured rows), summaries/ (one JSON per window), workspace/ (Evidently)"
        ),
    )
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
    keep_snapshots: int = Field(
        500,
        ge=1,
        description=("Evidently snapshots kept per model version in the workspace (oldest deleted first)"),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DriftSettings:
        """Settings from `EMBEDGATE_DRIFT_*` variables (default: the process environment); empty means unset."""
        return settings_from_env(
            cls, ENV_PREFIX, environ, DriftSettingsError, "drift settings", "docs/drift.md"
        )

    @property
    def windows_dir(self) -> Path:
        return self.dir / "windows"

    @property
    def summaries_dir(self) -> Path:
        return self.dir / "summaries"

    @property
    def workspace_dir(self) -> Path:
        return self.dir / "workspace"

    def describe(self) -> list[dict[str, Any]]:
        """Every setting as {env, value, default, description} (for /info and docs/drift.md)."""
        return describe_settings(self, ENV_PREFIX)
