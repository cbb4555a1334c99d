"""report.html: built from what the stages wrote, self-contained (nothing fetched), and rendered by headless
Chromium with the network cut off. Needs Chromium (`apt-get install -y chromium`; `make test` installs it)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from gates.cli import main
from tests.gates.test_drift_dashboard import chromium
from tests.synthetic import write_lay_jargon_beir, write_untrained_run

OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"  # any request to a host would fail to resolve


class _References(HTMLParser):
    """Every URL the page would load or link to: src/href/srcset/action/poster attributes and CSS url()."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in {"src", "href", "srcset", "action", "poster", "data"} and value:
                self.urls.append(value)
            if name == "style" and value:
                self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", value)

    def handle_data(self, data):
        self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", data)
        self.urls += re.findall(r"@import\s+['\"]([^'\"]+)", data)


def external_references(html: str) -> list[str]:
    """URLs that are not inline data or in-page anchors."""
    parser = _References()
    parser.feed(html)
    return [u for u in parser.urls if not u.startswith(("data:", "#"))]


def test_the_reference_check_can_fail():
    assert external_references('<img src="https://cdn.example.com/x.png"><a href="#gate">g</a>') == [
        "https://cdn.example.com/x.png"
    ]
    css = "<style>@import 'http://x/y.css'; b{background:url(//x/z.png)}</style>"
    assert sorted(external_references(css)) == ["//x/z.png", "http://x/y.css"]


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory, tiny_model_dir):
    """A run evaluated and gated for real (the tiny model against itself: the gate blocks it)."""
    root = tmp_path_factory.mktemp("report")
    data = write_lay_jargon_beir(root / "data", train_queries=20, test_queries=20)
    run = write_untrained_run(root / "runs" / "r1", tiny_model_dir, data)
    assert main(["evaluate", str(run), "--data", str(data), "--registry", str(root / "registry")]) == 0
    assert main(["gate", str(run)]) == 1
    return run


def test_report_command_builds_a_page_with_every_section(gated_run, capsys):
    capsys.readouterr()
    assert main(["report", str(gated_run)]) == 0
    path = capsys.readouterr().out.strip()
    assert path == str(gated_run / "report.html")
    html = (gated_run / "report.html").read_text()
    assert external_references(html) == []
    assert html.count('src="data:image/png;base64,') == 1  # the metrics-vs-dim plot (no training in this run)
    for text in (
        "Candidate vs baseline",
        "primary_improves",
        "p-value",
        "FAILED",
        "base model",
        "onnx-int8",
        "The data gate did not run.",
        "Training did not run.",
    ):
        assert text in html, text


def test_chromium_renders_it_offline(gated_run, tmp_path):
    from PIL import Image

    main(["report", str(gated_run)])
    page = (gated_run / "report.html").as_uri()
    dom = chromium([OFFLINE, "--dump-dom", page], tmp_path / "profile-dom").stdout
    assert "Gate decision" in dom and "primary_improves" in dom
    shot = tmp_path / "report.png"
    chromium([OFFLINE, f"--screenshot={shot}", page], tmp_path / "profile-shot")
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # text, tables and the inlined plot, not a blank page
    assert max(count for count, _ in colours) < 0.97 * image.size[0] * image.size[1]


def test_report_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not an embedgate run directory" in capsys.readouterr().err
