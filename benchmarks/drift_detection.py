"""Drift detection as the pipeline ships it: false alarms on queries the promoted model never saw, and how much
of a shift (another domain mixed into normal traffic) is flagged. Real datasets are used here only, never in tests.

    embedgate demo --out artifacts/demo                     # once (~20 min quiet): a real pipeline run
    python benchmarks/drift_detection.py artifacts/demo/runs/<run_id> --datasets ../shared/datasets
    python benchmarks/drift_detection.py RUN --datasets DIR --window-rows 200 --same-windows 20 --mix-windows 30

What ships: the run's fine-tuned export (`RUN/onnx`) and the reference its drift-reference stage stored
(`RUN/reference`), built from `gates.pipeline.drift_texts.pipeline_reference_texts` (the domain's judged queries, those
training never saw marked held-out, a random corpus sample) at the reference dim the run chose.

That stored reference was calibrated on *every* held-out query, so no unseen query is left to test it with. The
false-alarm rate is therefore measured by 2-fold cross-fitting: the held-out queries are split in two; a reference
is built by the same `build_reference`, on the same model, from the trained queries plus one half, and the other
half is the same-distribution stream (then the halves swap). Each stream is served as requests of 10 texts drawn
with replacement, through the real capture (`DriftCapture`, sample rate 1) into window files, judged by
`run_drift` exactly as the service's monitor does. Shifted streams: 20% of texts from another domain (a BEIR
folder's queries, e.g. SciFact claims; STS-B sentences; medical questions) mixed into the held-out stream, and
whole windows of another domain.

The options the design was chosen from are compared on the same folds with the signal functions on arrays (no
capture; the same numbers the Evidently metrics compute): the reference before the fix (all queries, null from
them), trained queries only, held-out queries only, and what ships (trained + held-out, null from held-out).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import load_beir_texts, load_text  # noqa: E402

JUNK = [
    "   ",
    "#### 1234 ----",
    "日本語のテキストです",
    "🙂🙂🙂",
    "0000-1111-2222",
    "!!!",
    "Привет мир",
    "<div></div>",
    "N/A",
    "........",
    "SELECT * FROM t",
    "tel. +41 44 000 00 00",
]
REQUEST = 10  # texts per request


def other_domains(datasets: Path, limit: int = 1000) -> dict[str, list[str]]:
    """Texts of other domains: a BEIR folder's queries (SciFact claims), STS-B sentences, medical questions."""
    found = {}
    if (datasets / "scifact" / "queries.jsonl").is_file():
        found["scifact"] = list(load_beir_texts(datasets / "scifact").queries.values())[:limit]
    if (datasets / "stsb" / "test.csv").is_file():
        with open(datasets / "stsb" / "test.csv", encoding="utf-8") as handle:
            found["stsb"] = [row["sentence1"] for row in csv.DictReader(handle)][:limit]
    if (datasets / "medical-question-pairs" / "pairs.csv").is_file():
        with open(datasets / "medical-question-pairs" / "pairs.csv", encoding="utf-8") as handle:
            found["medical"] = sorted({row["question1"] for row in csv.DictReader(handle)})[:limit]
    if not found:
        raise SystemExit(f"--datasets {datasets}: no scifact/, stsb/ or medical-question-pairs/ inside")
    return {**found, "junk": JUNK}


class Vectors:
    """Every text embedded once through the served runtime at the reference dim (embedding is deterministic), so
    each reference below is `build_reference` without its embedding pass."""

    def __init__(self, embedder, dim: int) -> None:
        self.embedder, self.dim, self.cache = embedder, dim, {}

    def warm(self, texts: list[str]) -> None:
        new = sorted(set(texts) - set(self.cache))
        for start in range(0, len(new), 256):
            chunk = new[start : start + 256]
            vectors = self.embedder.embed(chunk, dimensions=self.dim)
            counts = self.embedder.count_tokens(chunk)
            self.cache.update({t: (v, c) for t, v, c in zip(chunk, vectors, counts, strict=True)})

    def matrix(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.cache[t][0] for t in texts])

    def reference(
        self, out_dir: Path, trained: list[str], held_out: list[str], corpus: list[str], window_rows: int
    ) -> Path:
        """What build_reference writes for these texts, from the cached vectors."""
        from service.drift.calibration import reference_spec
        from service.drift.descriptors import describe_texts
        from service.drift.reference import write_reference

        texts = [*trained, *held_out]
        mask = np.asarray([False] * len(trained) + [True] * len(held_out))

        def rows(items: list[str]) -> list[dict]:
            counts = [self.cache[t][1] for t in items]
            return describe_texts(items, counts, [c > self.embedder.max_seq_length for c in counts])

        spec = reference_spec(
            self.matrix(texts), mask, self.matrix(corpus), rows(texts), self.dim, window_rows
        )
        write_reference(
            out_dir, spec, self.matrix(texts), self.matrix(corpus), rows(texts), rows(corpus), mask
        )
        return out_dir


def draw(
    rng: random.Random, normal: list[str], other: list[str] | None, share: float, count: int
) -> list[str]:
    """`count` texts: each from `other` with probability `share`, else from `normal` (with replacement)."""
    return [rng.choice(other) if other and rng.random() < share else rng.choice(normal) for _ in range(count)]


# ---- the shipped path: real capture, run_drift ----
def serve_and_judge(
    vectors: Vectors,
    registry_root: Path,
    scratch: Path,
    name: str,
    windows: list[list[str]],
    window_rows: int,
) -> list:
    """Serve each window's texts as requests through the capture, then judge every window with run_drift."""
    from service.drift.capture import DriftCapture
    from service.drift.runner import run_drift
    from service.drift.settings import DriftSettings

    settings = DriftSettings(
        dir=scratch / f"drift-{name}", sample_rate=1.0, window_rows=window_rows, keep_windows=len(windows) + 1
    )
    capture = DriftCapture(settings, seed=0)
    embedder = vectors.embedder
    for texts in windows:
        for start in range(0, len(texts), REQUEST):
            batch = texts[start : start + REQUEST]
            counts = [vectors.cache[t][1] for t in batch]
            capture.record(
                batch,
                vectors.matrix(batch),
                counts,
                [c > embedder.max_seq_length for c in counts],
                "v0001",
                vectors.dim,
            )
        capture.wait_idle()
    capture.close()
    return list(run_drift(settings, registry_root, write_snapshots=False).computed)


def within(flags: list[bool], windows: int = 3) -> float:
    """Share of consecutive runs of `windows` windows (non-overlapping) with at least one flagged window."""
    runs = [flags[start : start + windows] for start in range(0, len(flags) - windows + 1, windows)]
    return sum(any(run) for run in runs) / max(len(runs), 1)


# ---- the options, on arrays ----
def option_scores(reference, window: np.ndarray) -> dict[str, float]:
    """The alarm signals of one window against a loaded reference, by the functions the Evidently metrics run."""
    from service.drift.signals import (
        embedding_drift_score,
        nearest_doc_cosine,
        nearest_query_cosine,
        retrieval_drop,
        tail_share,
    )

    novelty = nearest_query_cosine(window, reference.queries)
    return {
        "embedding": embedding_drift_score(window, reference.queries),
        "retrieval": retrieval_drop(
            nearest_doc_cosine(window, reference.corpus),
            np.asarray([reference.spec.retrieval_reference_mean]),
        ),
        "novelty": tail_share(novelty, reference.spec.novelty_cutoff),
    }


def verdict(reference, window: np.ndarray, scores: dict[str, float], signals: tuple[str, ...]) -> bool:
    from service.drift.signals import effective_rows
    from service.drift.thresholds import novelty_window_threshold

    thresholds = {s.name: s.threshold for s in reference.spec.calibration.signals}
    thresholds["novelty"] = novelty_window_threshold(reference.spec, effective_rows(window))
    return any(scores[name] > thresholds[name] for name in signals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a pipeline run folder (onnx/, reference/, config.yaml)")
    parser.add_argument(
        "--datasets",
        type=Path,
        required=True,
        help="folder with other domains: scifact/ (a BEIR "
        "folder), stsb/test.csv, medical-question-pairs/pairs.csv (any of them)",
    )
    parser.add_argument("--window-rows", type=int, default=200)
    parser.add_argument("--same-windows", type=int, default=20, help="same-distribution windows per fold")
    parser.add_argument("--mix-windows", type=int, default=15, help="20%%-shift windows per fold")
    parser.add_argument("--mix-share", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from gates.pipeline.config import load_pipeline_config
    from gates.pipeline.drift_texts import pipeline_reference_texts
    from service.drift.reference import load_reference
    from service.drift.reference_builder import build_reference
    from service.model.embedder import OnnxEmbedder
    from service.registry.registry import Registry

    run = args.run_dir.resolve()
    config = load_pipeline_config(run / "config.yaml")
    texts = pipeline_reference_texts(config)
    scratch_root = tempfile.TemporaryDirectory()
    if not (
        run / "reference"
    ).is_dir():  # the run has not reached its drift-reference stage yet: run that stage
        dims = json.loads((run / "onnx" / "embedder.json").read_text())["dims"]
        build_reference(
            run / "onnx",
            texts.queries,
            texts.corpus_sample,
            Path(scratch_root.name) / "stored",
            dim=min(dims),
            held_out_queries=texts.held_out_queries,
        )
        print(f"{run / 'reference'} is not there yet: built it as the pipeline's stage does", flush=True)
    stored = load_reference(
        run / "reference" if (run / "reference").is_dir() else Path(scratch_root.name) / "stored"
    )
    print(
        f"run {run.name}: reference dim {stored.dim}, {stored.spec.query_count} queries "
        f"({stored.spec.held_out_count} held out), {stored.spec.corpus_count} passages; stored thresholds "
        + ", ".join(
            f"{s.name} {s.threshold:.4f}{'' if s.in_alarm else ' (reported)'}"
            for s in stored.spec.calibration.signals
        )
        + f"; {load_text()}",
        flush=True,
    )
    assert len(texts.held_out_queries) == stored.spec.held_out_count, "config and stored reference disagree"
    embedder = OnnxEmbedder.from_export_dir(run / "onnx", threads=args.threads)
    vectors = Vectors(embedder, stored.dim)
    domains = other_domains(args.datasets)
    started = time.perf_counter()
    vectors.warm(
        texts.queries
        + texts.held_out_queries
        + texts.corpus_sample
        + [t for pool in domains.values() for t in pool]
    )
    print(
        f"embedded {len(vectors.cache)} texts in {time.perf_counter() - started:.0f} s ({load_text()})",
        flush=True,
    )
    held = sorted(texts.held_out_queries)
    random.Random(0).shuffle(held)
    folds = [held[: len(held) // 2], held[len(held) // 2 :]]
    rows = args.window_rows
    options = {
        "before the fix: all queries, null from all": lambda fit: ([], texts.queries + fit),
        "trained queries only": lambda fit: ([], texts.queries),
        "held-out queries only": lambda fit: ([], fit),
        "ships: trained + held-out, null from held-out": lambda fit: (texts.queries, fit),
    }
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        option_rows: dict[str, dict[str, list]] = {
            name: {"same": [], "mix": [], "other": []} for name in options
        }
        shipped = {"same": [], "mix": [], "mix_signals": [], "other": {}}
        for fold, (stream, fit) in enumerate(((folds[0], folds[1]), (folds[1], folds[0]))):
            rng = random.Random(fold)
            same = [draw(rng, stream, None, 0, rows) for _ in range(args.same_windows)]
            mix = [
                draw(
                    rng,
                    stream,
                    domains["scifact"] if "scifact" in domains else next(iter(domains.values())),
                    args.mix_share,
                    rows,
                )
                for _ in range(args.mix_windows)
            ]
            others = {
                name: [draw(rng, pool, None, 0, rows) for _ in range(3)] for name, pool in domains.items()
            }
            for name, make in options.items():
                trained, held_out = make(fit)
                ref_dir = vectors.reference(
                    scratch / f"option{list(options).index(name)}-fold{fold}",
                    trained,
                    held_out,
                    texts.corpus_sample,
                    rows,
                )
                signals = ("embedding", "retrieval")  # the signals the design before this one alarmed on
                reference = load_reference(ref_dir)
                for kind, windows in (
                    ("same", same),
                    ("mix", mix),
                    ("other", [w for ws in others.values() for w in ws]),
                ):
                    for window in windows:
                        matrix = vectors.matrix(window)
                        scores = option_scores(reference, matrix)
                        option_rows[name][kind].append(
                            (
                                verdict(reference, matrix, scores, signals),
                                verdict(reference, matrix, scores, (*signals, "novelty")),
                            )
                        )
                if name.startswith("ships"):
                    registry = Registry(scratch / f"registry-{fold}")
                    registry.add_version({"reference": ref_dir}, metadata={})
                    thresholds = {
                        s.name: s.threshold for s in load_reference(ref_dir).spec.calibration.signals
                    }
                    print(
                        f"fold {fold}: shipped design, {len(fit)} held-out queries calibrate, {len(stream)} "
                        f"stream; thresholds {thresholds} ({load_text()})",
                        flush=True,
                    )
                    judged = serve_and_judge(vectors, registry.root, scratch, f"same{fold}", same, rows)
                    shipped["same"] += [w.drifted for w in judged]
                    judged = serve_and_judge(vectors, registry.root, scratch, f"mix{fold}", mix, rows)
                    shipped["mix"] += [w.drifted for w in judged]
                    shipped["mix_signals"] += [{s.name: bool(s.drifted) for s in w.signals} for w in judged]
                    for other, windows in others.items():
                        judged = serve_and_judge(
                            vectors, registry.root, scratch, f"{other}{fold}", windows, rows
                        )
                        shipped["other"].setdefault(other, []).append([w.drifted for w in judged])
        print(
            f"\n== shipped design through the capture and run_drift, {rows}-row windows, 2 folds ({load_text()})"
        )
        print(
            f"same distribution (held-out queries never in the reference): {sum(shipped['same'])} of "
            f"{len(shipped['same'])} windows flagged"
        )
        by_signal = {name: sum(s[name] for s in shipped["mix_signals"]) for name in shipped["mix_signals"][0]}
        print(
            f"{args.mix_share:.0%} SciFact mixed in: {sum(shipped['mix'])} of {len(shipped['mix'])} windows "
            f"flagged ({sum(shipped['mix']) / len(shipped['mix']):.0%}; by signal {by_signal}); caught within 3 "
            f"windows: {within(shipped['mix']):.0%} of {len(shipped['mix']) // 3} runs of 3"
        )
        for other, runs in shipped["other"].items():
            print(
                f"{other:<8} first window flagged in {sum(run[0] for run in runs)} of {len(runs)} folds; all 3 "
                f"flagged (alert) in {sum(all(run) for run in runs)} of {len(runs)}"
            )
        print(
            f"\n== options on the same folds (arrays; alarm on embedding+retrieval / + novelty) ({load_text()})"
        )
        print(f"{'option':<48} {'same: false alarms':>22} {'20% mix: flagged':>20} {'other domains':>16}")
        for name, kinds in option_rows.items():
            cells = []
            for kind in ("same", "mix", "other"):
                hits = kinds[kind]
                cells.append(f"{sum(h[0] for h in hits)}/{sum(h[1] for h in hits)} of {len(hits)}")
            print(f"{name:<48} {cells[0]:>22} {cells[1]:>20} {cells[2]:>16}")


if __name__ == "__main__":
    main()
