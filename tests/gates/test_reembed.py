"""`embedgate embed` (gates/reembed.py): a few thousand texts through the served graph of a registry version, locally
and on a real local Ray cluster, equal to what the endpoint returns; a killed run resumes without duplicate rows;
bad input is refused before any work starts."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from gates.cli import main
from gates.reembed import ReembedError, embed_corpus, read_corpus
from service.registry.registry import Registry
from tests.conftest import TINY_WORDS
from tests.service.serving import (
    REPO_ROOT,
    promote,
)

TEXTS = 3000


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_exports) -> Registry:
    registry = Registry(tmp_path_factory.mktemp("reembed") / "registry")
    promote(registry, tiny_exports["a"])  # v0001 (serving dim 16)
    promote(registry, tiny_exports["b"])  # v0002, the champion
    return registry


@pytest.fixture(scope="module")
def corpus_jsonl(tmp_path_factory):
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    rows = [
        {"id": f"doc-{i}", "text": " ".join(rng.choices(TINY_WORDS, k=rng.randint(3, 40)))}
        for i in range(TEXTS)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _read_output(out) -> tuple[list[str], np.ndarray, dict]:
    table = pq.read_table(out / "shards")  # every shard of the folder
    manifest = json.loads((out / "manifest.json").read_text())
    ids = table.column("id").to_pylist()
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    assert set(table.column("version").to_pylist()) == {manifest["version"]}
    assert set(table.column("dim").to_pylist()) == {manifest["dim"]}
    return ids, vectors, manifest


def _endpoint_vectors(registry: Registry, texts: list[str], version: str, dim: int) -> np.ndarray:
    """What the service returns for `texts` pinned to `version` at `dim` (the real routes, in-process)."""
    from prometheus_client import CollectorRegistry

    from service.api.metrics import ServiceMetrics
    from service.api.routes import create_http_app
    from service.runtime import ServingRuntime
    from service.settings import ServeSettings

    runtime = ServingRuntime.create(
        ServeSettings(registry=registry.root, threads=1, keep_versions=0),
        metrics=ServiceMetrics(CollectorRegistry()),
        drift=None,
        registry_chosen=True,
    )

    async def ask() -> np.ndarray:
        await runtime.start()
        try:
            transport = httpx.ASGITransport(app=create_http_app(lambda: runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://embedgate.test") as client:
                parts = []
                for start in range(0, len(texts), 256):
                    response = await client.post(
                        "/v1/embeddings",
                        json={"input": texts[start : start + 256], "model": version, "dimensions": dim},
                    )
                    assert response.status_code == 200, response.text
                    assert response.headers["x-embedgate-model-version"] == version
                    parts.append([row["embedding"] for row in response.json()["data"]])
                return np.concatenate([np.array(p, dtype=np.float32) for p in parts])
        finally:
            await runtime.stop()

    return asyncio.run(ask())


def _assert_equal_to_endpoint(registry, corpus_jsonl, ids, vectors, version, dim):
    texts = {row["id"]: row["text"] for row in map(json.loads, corpus_jsonl.read_text().splitlines())}
    expected = _endpoint_vectors(registry, [texts[i] for i in ids], version, dim)
    cosine = np.sum(vectors * expected, axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.99999, f"lowest cosine {cosine.min()}"


def test_local_embed_equals_the_endpoint_and_a_rerun_skips_every_shard(
    registry, corpus_jsonl, tmp_path, capsys
):
    out = tmp_path / "out"
    args = [
        "embed",
        str(corpus_jsonl),
        "--version",
        "v0001",
        "--dim",
        "8",
        "--out",
        str(out),
        "--registry",
        str(registry.root),
        "--shard-size",
        "700",
        "--threads",
        "2",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert (
        f"embedded {TEXTS} texts with v0001 at dim 8 (local" in captured.out and "5 shard(s)" in captured.out
    )
    assert "text/s" in captured.err or "texts/s" in captured.err  # tqdm's rate
    ids, vectors, manifest = _read_output(out)
    assert sorted(ids) == sorted(f"doc-{i}" for i in range(TEXTS)) and vectors.shape == (TEXTS, 8)
    assert manifest["total_rows"] == TEXTS and [s["rows"] for s in manifest["shards"]] == [700] * 4 + [200]
    _assert_equal_to_endpoint(registry, corpus_jsonl, ids, vectors, "v0001", 8)

    assert main(args) == 0
    assert "nothing left to embed: all 5 shard(s) of 3000 texts" in capsys.readouterr().out
    assert _read_output(out)[0] == ids


@pytest.mark.slow
@pytest.mark.integration
def test_ray_embed_on_a_local_cluster_equals_the_endpoint(registry, corpus_jsonl, tmp_path):
    import ray  # in the lock (requirements/lock.txt): missing is an install bug, not a skip

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = embed_corpus(
            read_corpus(corpus_jsonl),
            registry.root,
            "champion",
            tmp_path / "out",
            shard_size=1000,
            ray_address=context.address_info["address"],
            workers=2,
        )
    finally:
        ray.shutdown()
    assert (result.engine, result.version, result.dim, result.shards) == ("ray", "v0002", 16, 3)
    ids, vectors, _ = _read_output(tmp_path / "out")
    assert len(ids) == len(set(ids)) == TEXTS
    _assert_equal_to_endpoint(registry, corpus_jsonl, ids, vectors, "v0002", 16)


def test_a_killed_run_resumes_without_duplicate_rows(registry, corpus_jsonl, tmp_path):
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "gates.cli",
        "embed",
        str(corpus_jsonl),
        "--version",
        "v0001",
        "--out",
        str(out),
        "--registry",
        str(registry.root),
        "--shard-size",
        "10",
        "--threads",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list((out / "shards").glob("part-*"))) < 3:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the group this test started
        process.wait(timeout=30)
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    finished = len(list((out / "shards").glob("part-*")))
    assert finished >= 3

    result = embed_corpus(read_corpus(corpus_jsonl), registry.root, "v0001", out, shard_size=10, threads=1)
    assert result.skipped_shards >= finished and result.shards == TEXTS // 10
    ids, vectors, manifest = _read_output(out)
    assert len(ids) == len(set(ids)) == TEXTS and manifest["total_rows"] == TEXTS
    assert not list((out / "shards").glob(".tmp-*"))


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (
            '{"id": "a", "body": "x"}\n',
            ".jsonl",
            r"no column \['text'\]; columns are \['id', 'body'\].*--text-column",
        ),
        (
            '{"id": "a", "text": "x"}\n{"id": "b", "text": "  "}\n',
            ".jsonl",
            r"1 empty text\(s\), e.g. ids \['b'\]",
        ),
        ("id,text\na,one\na,two\n", ".csv", r"duplicate ids, e.g. \['a'\]"),
        ("id,text\n", ".csv", "no rows; nothing to embed"),
        ("x", ".txt", r"unknown format '.txt'; expected \['.csv', '.jsonl', '.parquet'\]"),
        ("{not json", ".jsonl", "not a readable .jsonl table"),
    ],
)
def test_bad_corpora_are_refused_with_the_fix(tmp_path, content, suffix, message):
    path = tmp_path / f"corpus{suffix}"
    path.write_text(content)
    with pytest.raises(ReembedError, match=message):
        read_corpus(path)


def test_a_bad_version_dim_or_folder_is_refused_before_any_work(registry, corpus_jsonl, tmp_path):
    corpus = read_corpus(corpus_jsonl)
    with pytest.raises(
        ReembedError, match=r"version 'v0042' does not exist .*servable: \['v0001', 'v0002'\]"
    ):
        embed_corpus(corpus, registry.root, "v0042", tmp_path / "a")
    with pytest.raises(ReembedError, match=r"--dim 12: v0001 was exported for dims \[32, 16, 8\]"):
        embed_corpus(corpus, registry.root, "v0001", tmp_path / "b", dim=12)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(ReembedError, match="is not empty and has no plan.json"):
        embed_corpus(corpus, registry.root, "v0001", tmp_path / "c")
    small = tmp_path / "small.csv"
    small.write_text("id,text\na,heart\n")
    embed_corpus(read_corpus(small), registry.root, "v0001", tmp_path / "d")
    with pytest.raises(
        ReembedError, match=r"earlier run with other settings \{'version': \('v0001', 'v0002'\)"
    ):
        embed_corpus(read_corpus(small), registry.root, "v0002", tmp_path / "d")


def test_embed_with_cutover_moves_the_champion_once_every_shard_is_done(tmp_path, tiny_exports, capsys):
    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])
    promote(registry, tiny_exports["b"], make_champion=False)  # staged by hand: v0001 stays the champion
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("id,text\na,heart blood pressure\nb,the tenant pays rent\n")
    args = [
        "embed",
        str(corpus),
        "--version",
        "v0002",
        "--out",
        str(tmp_path / "out"),
        "--registry",
        str(registry.root),
        "--cutover",
    ]
    assert main(args) == 0
    assert "cut over: v0002 is the champion (previous: v0001" in capsys.readouterr().out
    entry = registry.history()[-1]
    assert (entry.action, entry.version, entry.alias) == ("cutover", "v0002", "champion")
    assert entry.reason.startswith("re-embedding done: 2 texts in")
    assert main(args) == 0
    assert "v0002 is already the champion" in capsys.readouterr().out


def test_documents_added_beside_stored_vectors_are_embedded_in_the_old_space(tmp_path, tiny_exports, capsys):
    """`--version v0002@v0001` / `champion@v0001`: the newer model through its compatible graph (what the service
    answers for that name), so documents a v0001 client adds sit with the ones it stored; a space a version does
    not answer in, and --cutover to a space, are refused before any work."""
    from service.model.embedder import OnnxEmbedder

    registry = Registry(tmp_path / "registry")
    promote(registry, tiny_exports["a"])  # v0001
    registry.add_version(  # v0002, answering in v0001's space through its own compatible export
        {"onnx": tiny_exports["b"], "compat/v0001/onnx": tiny_exports["a"]},
        metadata={
            "serving_dim": 16,
            "serve_precision": "fp32",
            "compatible_spaces": {"v0001": {"serving_dim": 8}},
        },
        who="tests",
        run_id="run-2",
    )
    small = tmp_path / "small.csv"
    small.write_text("id,text\na,heart attack\nb,chest pain at night\n")
    corpus = read_corpus(small)
    result = embed_corpus(corpus, registry.root, "champion@v0001", tmp_path / "out")
    ids, vectors, manifest = _read_output(tmp_path / "out")
    assert (
        manifest["version"] == result.version == "v0002@v0001" and manifest["dim"] == 8
    )  # v0001's serving dim
    expected = OnnxEmbedder.from_export_dir(tiny_exports["a"]).embed(corpus.texts, dimensions=8)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    with pytest.raises(ReembedError, match=r"v0001 answers in no v0002 space; its compatible spaces: none"):
        embed_corpus(corpus, registry.root, "v0001@v0002", tmp_path / "bad")
    with pytest.raises(ReembedError, match=r"after '@' expected the version whose space is wanted"):
        embed_corpus(corpus, registry.root, "v0002@latest", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    args = ["embed", str(small), "--version", "v0002@v0001", "--out", str(tmp_path / "c"), "--cutover"]
    assert main([*args, "--registry", str(registry.root)]) == 2
    assert "a compatible space is not a version the champion can move to" in capsys.readouterr().err


def test_a_stop_while_a_shard_is_written_leaves_no_half_written_file(tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C can land inside the parquet write (the Ray test hit it at 60%): the shard is whole or
    absent, and no .tmp file stays beside the finished ones."""
    from gates.reembed import _write_shard

    def stopped(table, where):
        with open(where, "wb") as half:
            half.write(b"PAR1 half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", stopped)
    with pytest.raises(KeyboardInterrupt):
        _write_shard(tmp_path / "part-00003.parquet", ["a", "b"], np.ones((2, 4)), "v0001", 4)
    assert list(tmp_path.iterdir()) == []
