"""Drift that says what to do next, closed into a loop on the tiny model (issue 28):

champion v0001 (trained on 6 of the 8 lay/jargon topics) -> served traffic through the real capture, one window
like the eval queries and two with 25% queries of the 2 topics it never saw -> `embedgate drift` flags the mixed
windows and lists their novel queries (mostly the unseen topics, the nearest reference query beside each) ->
`embedgate drift --export` with the champion's top passages -> a "person" (the known topic) fills `positive` ->
`embedgate validate` passes it as a pairs set -> `embedgate drift --add-labels` into the old BEIR folder ->
`embedgate pipeline` -> the gate compares the candidate with v0001 on the old test queries and the new ones.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from gates.cli import main
from service.drift.capture import DriftCapture
from service.drift.runner import read_summaries
from service.drift.settings import DriftSettings
from service.model.embedder import OnnxEmbedder
from service.registry.registry import Registry
from tests.synthetic import FILLER, LAY_JARGON, tiny_pipeline_config, write_lay_jargon_beir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore"),
]  # two tiny pipelines: ~2-3 min on 2 cores
UNSEEN = ("child", "money")  # topics the champion never trained on: the new traffic
WINDOW = 200
MIXED = 50  # unseen-topic rows per mixed window


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _drop_topics(full: Path, out: Path) -> Path:
    """`full` without the queries (and qrels) of the UNSEEN topics; the corpus keeps every document."""
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text((full / "corpus.jsonl").read_text())
    dropped = set()
    for split in ("train", "test"):
        lines = (full / "qrels" / f"{split}.tsv").read_text().splitlines()
        dropped |= {ln.split("\t")[0] for ln in lines[1:] if ln.split("\t")[1].split("-")[0] in UNSEEN}
        kept = [lines[0]] + [ln for ln in lines[1:] if ln.split("\t")[0] not in dropped]
        (out / "qrels" / f"{split}.tsv").write_text("\n".join(kept) + "\n")
    queries = [q for q in _jsonl(full / "queries.jsonl") if q["_id"] not in dropped]
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    return out


def _unseen_queries(count: int, seed: int = 11) -> dict[str, str]:
    """Lay queries of the UNSEEN topics -> their topic (the labeller's knowledge)."""
    rng = random.Random(seed)
    found: dict[str, str] = {}
    while len(found) < count:
        topic = UNSEEN[len(found) % len(UNSEEN)]
        lay = LAY_JARGON[topic][0].split()
        found.setdefault(" ".join(rng.sample(lay, 2) + rng.sample(FILLER, 3)), topic)
    return found


@pytest.fixture(scope="module")
def loop(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("drift-loop")
    # 120 eval queries (90 after the drop): windows drawn from them repeat less, so the novelty threshold is tighter
    full = write_lay_jargon_beir(root / "full", test_queries=120)
    data = _drop_topics(full, root / "data")
    config = tiny_pipeline_config(tiny_model_dir, data, root)
    (root / "pipeline.yaml").write_text(yaml.safe_dump(config))
    assert main(["pipeline", str(root / "pipeline.yaml"), "--set", "run_id=first", "-q"]) == 0
    registry = Registry(root / "registry")
    assert registry.champion().version == "v0001"
    return root, data, config


def _serve_windows(root: Path, registry: Path, unseen: dict[str, str]) -> DriftSettings:
    """Three windows through the real capture: the eval queries, then twice 75% eval + 25% unseen topics."""
    folder = Registry(registry).version_dir("v0001")
    embedder = OnnxEmbedder.from_export_dir(folder / "onnx")
    eval_ids = {
        ln.split("\t")[0] for ln in (root / "data" / "qrels" / "test.tsv").read_text().splitlines()[1:]
    }
    in_domain = [q["text"] for q in _jsonl(root / "data" / "queries.jsonl") if q["_id"] in eval_ids]
    rng = random.Random(3)
    novel = list(unseen)
    windows = [rng.choices(in_domain, k=WINDOW)]
    for start in (0, MIXED):
        mixed = rng.choices(in_domain, k=WINDOW - MIXED) + novel[start : start + MIXED]
        rng.shuffle(mixed)
        windows.append(mixed)
    settings = DriftSettings(dir=root / "drift", sample_rate=1.0, window_rows=WINDOW, texts="keep")
    capture = DriftCapture(settings, seed=0)
    for texts in windows:
        for start in range(0, WINDOW, 10):  # requests of 10 texts, served at the full dim
            batch = texts[start : start + 10]
            vectors = embedder.embed(batch, dimensions=32)
            capture.record(
                batch, vectors, [len(t.split()) + 2 for t in batch], [False] * len(batch), "v0001", 32
            )
        assert capture.wait_idle(30)
    capture.close()
    return settings


def test_drifted_windows_list_the_unseen_topics_and_the_loop_retrains_on_them(loop, capsys, monkeypatch):
    root, data, config = loop
    registry = root / "registry"

    def report(line: str) -> None:  # the measured numbers, shown with -s
        with capsys.disabled():
            print(line)

    unseen = _unseen_queries(2 * MIXED)
    settings = _serve_windows(root, registry, unseen)
    monkeypatch.setenv("EMBEDGATE_DRIFT_DIR", str(settings.dir))

    # 1. judged: the same-distribution window is not flagged, the mixed ones are, with their novel queries listed
    code = main(["drift", "--registry", str(registry), "--alert-windows", "5"])
    out = capsys.readouterr().out
    verdicts = read_summaries(settings.summaries_dir)
    assert [v.drifted for v in verdicts] == [False, True, True], out
    assert code == 0  # 2 drifted in a row, alert at 5
    report(out)
    assert (
        out.count("novel queries:") == 2 and "nearest reference query" in out
    )  # printed for drifted windows
    same = verdicts[0].novel
    assert (
        same["novel_rows"] <= 0.05 * same["scored_rows"]
    )  # what new in-domain traffic shows: nothing alarming
    for verdict in verdicts[1:]:
        from service.drift.novelty import NovelQueries

        found = NovelQueries.from_dict(verdict.novel)
        texts = [t for g in found.groups for t in g.examples]
        top = [t for g in found.groups for t in g.examples][:20]
        purity = sum(t in unseen for t in top) / len(top)
        report(f"{verdict.window_id}: {found.novel_rows} novel rows, top-{len(top)} purity {purity:.2f}")
        assert purity >= 0.8, (purity, texts[:20])
        assert all(g.nearest_reference_query for g in found.groups)

    # 2. exported with the champion's top passages; exit 2 with the fix when the corpus is missing
    to_label = root / "to_label.csv"
    assert main(["drift", "--registry", str(registry), "--export", str(to_label)]) == 2
    assert "needs --corpus" in capsys.readouterr().err
    code = main(
        [
            "drift",
            "--registry",
            str(registry),
            "--export",
            str(to_label),
            "--corpus",
            str(data),
            "--top-k",
            "5",
        ]
    )
    assert code == 0, capsys.readouterr()
    with open(to_label, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {"id", "anchor", "positive", "count", "windows", "rank_1", "rank_5_id"} <= set(rows[0])
    assert all(int(r["count"]) >= 1 and r["windows"] for r in rows)

    # 3. labelled: the right passage picked from the candidates (a passage of the query's topic), else searched
    picked = searched = 0
    corpus = {d["_id"]: d["text"] for d in _jsonl(data / "corpus.jsonl")}
    for row in rows:
        topic = unseen.get(row["anchor"])
        if topic is None:
            continue  # an in-domain query among the novel ones: the labeller skips it
        rank = next((k for k in range(1, 6) if row[f"rank_{k}_id"].startswith(f"{topic}-")), None)
        doc = row[f"rank_{rank}_id"] if rank else f"{topic}-0"
        picked, searched = picked + bool(rank), searched + (not rank)
        row["positive"], row["positive_id"] = corpus[doc], doc
    report(f"labelled {picked + searched} rows: {picked} picked from the top 5, {searched} searched")
    labelled = root / "labelled.csv"
    with open(labelled, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["validate", str(labelled), "--out", str(root / "gate-labelled")]) == 0, capsys.readouterr()
    capsys.readouterr()

    # 4. into the old training data, then the pipeline gates the candidate against v0001
    merged = root / "data-v2"
    code = main(["drift", "--add-labels", str(labelled), "--into", str(data), "--out", str(merged), "--json"])
    assert code == 0
    added = json.loads(capsys.readouterr().out)
    assert added["labelled"] == picked + searched and added["test"] >= 10 and added["new_documents"] == 0
    new_ids = {ln.split("\t")[0] for ln in (merged / "qrels" / "novel.tsv").read_text().splitlines()[1:]}
    old_ids = {ln.split("\t")[0] for ln in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    (root / "pipeline-v2.yaml").write_text(
        yaml.safe_dump({**config, "data": {"path": str(merged), "type": "ir"}})
    )
    code = main(["pipeline", str(root / "pipeline-v2.yaml"), "--set", "run_id=second"])
    out = capsys.readouterr()
    assert code in (0, 1), out.out + out.err
    decision = json.loads((root / "runs" / "second" / "gate" / "decision.json").read_text())
    assert decision["baseline_version"] == "v0001"  # gated against the current champion: promotion accepts it
    if code == 0:
        assert decision["passed"] and "PROMOTED: v0002 is the champion" in out.out + out.err
    else:  # blocked: each failed critical check says why
        failed = [c for c in decision["checks"] if not c["passed"] and c["severity"] == "critical"]
        assert failed and all(c["reason"] for c in failed)
    report(
        f"pipeline on old + labelled data: exit {code}; "
        + "; ".join(f"{c['check']}: {c['reason']}" for c in decision["checks"] if c["severity"] == "critical")
    )

    # the candidate against v0001 on each part of the test split: the old eval queries and the labelled ones
    def per_part(label: str) -> tuple[float, float]:
        results = json.loads((root / "runs" / "second" / "eval" / f"{label}.json").read_text())
        entry = next(r for r in results["retrieval"] if r["backend"] == "onnx-fp32" and r["dim"] == 16)
        score = {q: v["ndcg@10"] for q, v in entry["per_query"].items()}
        return float(np.mean([score[q] for q in old_ids])), float(np.mean([score[q] for q in new_ids]))

    (cand_old, cand_new), (base_old, base_new) = per_part("candidate"), per_part("baseline")
    print(
        f"ndcg@10 old eval {base_old:.3f} -> {cand_old:.3f}; labelled queries {base_new:.3f} -> {cand_new:.3f}"
    )
    assert cand_new > base_new + 0.05  # learning the labelled rows is what the loop is for
