"""benchmarks/harness.py, the set-ups the benchmarks share: a served process comes up on a free port and its whole
process group is gone after; a BEIR folder reads into plain dicts; the markdown table's shape."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from benchmarks.harness import free_port, load_beir_texts, markdown_table, served, timed
from training.errors import DataFormatError

LEGAL = Path(__file__).resolve().parents[1] / "training" / "data" / "legal_lay"


def test_served_answers_then_leaves_no_process(tmp_path):
    argv = lambda port: [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]  # noqa: E731
    with served(argv, ready="/", log_path=tmp_path / "server.log", cwd=tmp_path) as server:
        with urllib.request.urlopen(server.url + "/", timeout=5) as answer:
            assert answer.status == 200
        pid = server.process.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_server_that_exits_says_so(tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with 3; see .*server\.log"):
        with served(
            lambda port: [sys.executable, "-c", "raise SystemExit(3)"], log_path=tmp_path / "server.log"
        ):
            pass


def test_free_port_is_free():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))  # raises if something listens there


def test_beir_texts_of_the_legal_set():
    data = load_beir_texts(LEGAL, splits=("test",))
    assert set(data.qrels) == {"test"} and data.qrels["test"]
    for query, docs in data.qrels["test"].items():
        assert query in data.queries and docs <= set(data.corpus)


def test_a_folder_without_beir_files_is_refused(tmp_path):
    with pytest.raises(DataFormatError, match="corpus.jsonl: file not found"):
        load_beir_texts(tmp_path)


def test_markdown_table_and_timing():
    table = markdown_table(["system", "backend", "ndcg@10"], [["base", "onnx", "0.5000"]], left=2)
    assert table.splitlines() == [
        "| system | backend | ndcg@10 |",
        "|---|---|---:|",
        "| base | onnx | 0.5000 |",
    ]
    with timed("nothing") as took:
        pass
    assert took.seconds >= 0 and str(took).startswith("nothing: 0.00 s (load ")
