"""The Evidently workspace of the drift monitor: one project per model version, a snapshot per window, and a
dashboard that plots each signal's score against its alarm threshold over time.

    workspace = DriftWorkspace(Path("drift/workspace"))
    snapshot_id = workspace.add_snapshot("v0003", snapshot, drifted=True, keep=500)
    # then: embedgate dashboard --workspace drift/workspace   (the Evidently UI)

Writers take an exclusive file lock, because the service's monitor and `embedgate drift` may write at the same
time and Evidently's file workspace does not guard project creation. Old snapshots are deleted beyond `keep`:
the UI loads every snapshot of a project into memory at start.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROJECT_PREFIX = "embedgate "
LOCK_FILE = ".embedgate-drift.lock"
DRIFTED_TAG = "drifted"


def project_name(model_version: str) -> str:
    return f"{PROJECT_PREFIX}{model_version}"


class DriftWorkspace:
    """An Evidently file workspace holding the drift snapshots, one project per model version."""

    def __init__(self, path: Path) -> None:
        from evidently.ui.workspace import Workspace

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._workspace = Workspace(str(self.path))

    def project_id(self, model_version: str) -> Any:
        """The version's project id, creating the project and its dashboard on first use."""
        with self._locked():
            return self._project_id(model_version)

    def add_snapshot(self, model_version: str, snapshot: Any, drifted: bool, keep: int) -> str:
        """Store one window's snapshot (tagged `drifted` when it drifted); keep the newest `keep` per version."""
        from evidently.legacy.core import new_id

        with self._locked():
            project_id = self._project_id(model_version)
            model = snapshot.to_snapshot_model()
            model.tags = sorted(set(model.tags) | ({DRIFTED_TAG} if drifted else set()))
            snapshot_id = new_id()
            self._workspace.state.write_snapshot(project_id, snapshot_id, model)
            self._prune(project_id, keep)
            return str(snapshot_id)

    def projects(self) -> dict[str, str]:
        """{project name: project id} for the drift projects in the workspace."""
        return {
            project.name: str(project.id)
            for project in self._workspace.list_projects()
            if project.name.startswith(PROJECT_PREFIX)
        }

    def snapshot_ids(self, model_version: str) -> list[str]:
        found = self._workspace.search_project(project_name(model_version))
        return [str(s) for s in self._workspace.list_runs(found[0].id)] if found else []

    def dashboard(self, model_version: str) -> Any:
        """The version's Evidently DashboardModel (tabs and panels), or None without a project."""
        found = self._workspace.search_project(project_name(model_version))
        return self._workspace.get_dashboard(found[0].id) if found else None

    def ensure_dashboards(self) -> int:
        """Give every drift project the current dashboard layout (for workspaces written by older versions)."""
        with self._locked():
            projects = [p for p in self._workspace.list_projects() if p.name.startswith(PROJECT_PREFIX)]
            for project in projects:
                self._workspace.save_dashboard(
                    project.id, dashboard_model(project.name[len(PROJECT_PREFIX) :])
                )
            return len(projects)

    def _project_id(self, model_version: str) -> Any:
        from evidently.sdk.models import ProjectModel

        found = self._workspace.search_project(project_name(model_version))
        if found:
            return found[0].id
        project = self._workspace.add_project(
            ProjectModel(
                name=project_name(model_version),
                description=f"Drift of served traffic for model version {model_version} against the reference stored "
                f"at its promotion (registry/versions/{model_version}/reference)",
            )
        )
        self._workspace.save_dashboard(project.id, dashboard_model(model_version))
        return project.id

    def delete_before(self, oldest: float) -> int:
        """Delete every drift snapshot written before `oldest` (unix seconds): the retention period."""
        from service.drift.retention import snapshot_time

        deleted = 0
        with self._locked():
            for project in self._workspace.list_projects():
                if not project.name.startswith(PROJECT_PREFIX):
                    continue
                for snapshot_id in self._workspace.list_runs(project.id):
                    if snapshot_time(snapshot_id) < oldest:
                        self._workspace.delete_run(project.id, snapshot_id)
                        deleted += 1
        return deleted

    def _prune(self, project_id: Any, keep: int) -> None:
        runs = sorted(self._workspace.list_runs(project_id))  # uuid7 ids sort by creation time
        for snapshot_id in runs[: max(len(runs) - keep, 0)]:
            self._workspace.delete_run(project_id, snapshot_id)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path / LOCK_FILE, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def dashboard_model(model_version: str) -> Any:
    """Two tabs: each signal's score against its threshold, and each descriptor's window mean over time."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel, text_panel

    from service.drift.descriptors import DESCRIPTOR_NAMES

    def metric(name: str, legend: str, **labels: str) -> Any:
        return PanelMetric(legend=legend, metric=name, metric_labels=labels)

    def score_panel(title: str, score: Any, signal: str, description: str) -> Any:
        return line_plot_panel(
            title,
            [score, metric("EmbedgateThreshold", "alarm threshold", signal=signal)],
            description=description,
            size="half",
        )

    signals = [
        text_panel(
            f"Drift of model {model_version}",
            description=(
                "One point per captured window. A window drifts when an alarm signal's score is above its threshold "
                "(calibrated on held-out queries the model was never trained on); alarm signals: embedding, retrieval "
                "and novelty (the reference says which, if too few held-out queries kept one out). Windows that "
                "drifted are tagged 'drifted'; open a window's report (Reports) for its novel queries and the "
                "descriptor distributions."
            ),
        ),
        score_panel(
            "Embedding drift vs threshold",
            metric("EmbedgateEmbeddingDrift", "classifier ROC AUC"),
            "embedding",
            "0.5 = same distribution as the reference queries, 1.0 = fully separable",
        ),
        score_panel(
            "Retrieval: drop in nearest-document cosine vs threshold",
            metric("EmbedgateMeanDrop", "held-out mean - window mean"),
            "retrieval",
            "how much further the window's queries are from their nearest reference document than "
            "held-out queries of the domain",
        ),
        score_panel(
            "Novelty: share of novel rows vs threshold",
            metric("EmbedgateTailShare", "share of novel rows"),
            "novelty",
            "share of the window's rows further from every reference query than all but 1% of "
            "the held-out queries",
        ),
        score_panel(
            "Descriptor drift vs threshold",
            metric("DriftedColumnsCount", "share of drifted descriptors", value_type="share"),
            "descriptors",
            "share of text descriptors whose distribution drifted (Evidently tests)",
        ),
        line_plot_panel(
            "Novel queries: groups per window (open a window's report for the list)",
            [metric("EmbedgateNovelQueries", "novel-query groups")],
            description=(
                "near-duplicate groups of the rows the novelty signal counts; each window's report (Reports) lists "
                "them with a few examples, their size and the nearest reference query; `embedgate drift export` "
                "writes them out for labelling"
            ),
            size="half",
        ),
        line_plot_panel(
            "Nearest-document and nearest-query cosine (window means)",
            [
                metric("MeanValue", "nearest document", column="nearest_doc_cosine"),
                metric("MeanValue", "nearest reference query", column="nearest_query_cosine"),
            ],
            size="half",
        ),
    ]
    shares = [name for name in DESCRIPTOR_NAMES if name != "tokens"]
    descriptors = [
        line_plot_panel(
            "Input length: mean tokens per text",
            [metric("MeanValue", "tokens", column="tokens")],
            size="half",
        ),
        line_plot_panel(
            "Text descriptors: window means (shares 0-1)",
            [metric("MeanValue", name, column=name) for name in shares],
            size="half",
        ),
        line_plot_panel(
            "Descriptor drift p-values (below 0.05: drifted)",
            [metric("ValueDrift", name, column=name) for name in DESCRIPTOR_NAMES],
            size="full",
        ),
    ]
    tabs = [
        DashboardTabModel(title="Drift", panels=[panel.id for panel in signals]),
        DashboardTabModel(title="Descriptors", panels=[panel.id for panel in descriptors]),
    ]
    return DashboardModel(tabs=tabs, panels=signals + descriptors)
