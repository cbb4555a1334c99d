"""`embedgate dashboard` serves the Evidently UI on a drift workspace, and a headless Chromium renders the
version's project with its panels (DOM text and a non-blank screenshot).

Needs Chromium (`apt-get install -y chromium`); CI installs it, so there a missing browser fails the test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from service.drift.calibration import reference_spec
from service.drift.descriptors import describe_text
from service.drift.reference import write_reference
from service.drift.runner import run_drift
from service.drift.settings import DriftSettings
from service.drift.windows import CapturedRow, WindowWriter
from service.registry.registry import Registry
from tests.service.serving import free_port

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore")]
DIM, WINDOW = 16, 30
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    "--virtual-time-budget=15000",
]


def unit(rng: np.random.Generator, centre: np.ndarray, count: int) -> np.ndarray:
    vectors = centre + rng.normal(scale=0.35, size=(count, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A drift folder with four judged windows of v0001: two like the reference, two shifted."""
    root = tmp_path_factory.mktemp("dashboard")
    rng = np.random.default_rng(0)
    home, away = rng.normal(size=DIM), rng.normal(size=DIM)
    queries, corpus = unit(rng, home, 80), unit(rng, home, 40)
    rows = [describe_text("what does the lease clause say about the deposit?", 14, False)] * 80
    held_out = np.arange(80) >= 40  # the model was trained on the first 40
    spec = reference_spec(queries, held_out, corpus, rows, DIM, WINDOW, splits=8)
    texts = [f"lease question {i}" for i in range(80)]
    write_reference(root / "reference", spec, queries, corpus, rows, rows[:40], held_out, query_texts=texts)
    registry = Registry(root / "registry")
    registry.add_version({"reference": root / "reference"}, metadata={})
    settings = DriftSettings(dir=root / "drift", window_rows=WINDOW)
    writer = WindowWriter(settings.windows_dir, WINDOW, keep_windows=10)
    traffic = (
        (home, "is the landlord allowed to keep my deposit?"),
        (home, "can I end the lease early"),
        (away, "1234 #### ----"),
        (away, "¿Dónde está la farmacia?"),
    )
    for hour, (centre, text) in enumerate(traffic):  # an hour apart, so the dashboard plots a time axis
        descriptors = describe_text(text, len(text.split()) + 2, False)
        served_at = time.time() - 3600 * (len(traffic) - hour)
        writer.append(
            [
                CapturedRow(served_at, "v0001", DIM, descriptors, vector, text)
                for vector in unit(rng, centre, WINDOW)
            ]
        )
    result = run_drift(settings, registry.root)
    assert [w.drifted for w in result.computed] == [False, False, True, True]
    return settings.workspace_dir


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def dashboard_url(workspace, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "ui.log"
    with open(log, "w") as handle:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gates.cli",
                "dashboard",
                "--workspace",
                str(workspace),
                "--port",
                str(port),
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DO_NOT_TRACK": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # Evidently's import takes 10-40 s on a busy 2-core machine
        while True:
            try:
                assert get_json(f"{url}/api/version")["application"] == "Evidently UI"
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"embedgate dashboard did not start (exit {server.poll()}): {log.read_text()[-2000:]}"
                    )
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def chromium(args: list[str], profile) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: CI must `apt-get install -y chromium` before the tests")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_dashboard_serves_a_project_per_version(dashboard_url):
    projects = get_json(f"{dashboard_url}/api/projects")
    assert [p["name"] for p in projects] == ["embedgate v0001"]


def test_chromium_renders_the_project_with_its_panels(dashboard_url, tmp_path):
    from PIL import Image

    (project,) = get_json(f"{dashboard_url}/api/projects")
    page = f"{dashboard_url}/projects/{project['id']}"
    dom = chromium(["--dump-dom", page], tmp_path / "profile-dom").stdout
    for text in (
        "embedgate v0001",
        "Embedding drift vs threshold",
        "Retrieval: drop in nearest-document cosine",
        "Descriptor drift vs threshold",
        "alarm threshold",
        "Novel queries: groups per window",
    ):
        assert text in dom, text
    shot = tmp_path / "dashboard.png"
    chromium([f"--screenshot={shot}", page], tmp_path / "profile-shot")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 1000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, axes and coloured lines, not a blank or error page
    assert max(count for count, _ in colours) < 0.97 * 1400 * 1000  # the background does not fill the page
    if os.environ.get("EMBEDGATE_SCREENSHOT_DIR"):  # keep it for a human to look at
        shutil.copy(shot, os.environ["EMBEDGATE_SCREENSHOT_DIR"])


def test_chromium_renders_a_drifted_windows_novel_queries(dashboard_url, workspace, tmp_path):
    """The window's report (a page of the same UI) lists its novel queries beside the nearest reference query."""
    from PIL import Image

    from service.drift.runner import read_summaries

    (project,) = get_json(f"{dashboard_url}/api/projects")
    drifted = [s for s in read_summaries(workspace.parent / "summaries") if s.drifted]
    page = f"{dashboard_url}/projects/{project['id']}/reports/{drifted[-1].snapshot_id}"
    dom = chromium(["--dump-dom", page], tmp_path / "profile-dom").stdout
    for text in ("Novel queries:", "nearest reference query", "¿Dónde está la farmacia?", "lease question"):
        assert text in dom, text
    assert "30 of 30 rows novel" in dom
    shot = tmp_path / "novel.png"
    chromium([f"--screenshot={shot}", page], tmp_path / "profile-shot")
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 200 and max(count for count, _ in colours) < 0.97 * 1400 * 1000
    if os.environ.get("EMBEDGATE_SCREENSHOT_DIR"):
        shutil.copy(shot, os.environ["EMBEDGATE_SCREENSHOT_DIR"])
