"""From a drifted window to training data: export the novel queries for labelling, then add the labelled rows to
the domain's BEIR folder for the next `embedgate pipeline` (docs/drift.md, "Acting on drift").

    exported = export_novel(settings, Path("registry"), Path("data/corpus.jsonl"), Path("to_label.csv"))
    # a person fills `positive` of each row: the right passage, usually one of rank_1 .. rank_k
    added = add_labels(Path("to_label.csv"), Path("data"), Path("data-v2"))
    # embedgate pipeline with data.path: data-v2 (its test split holds the old eval queries and the new ones)

The export is a table the data gate reads as a pairs set (`anchor`, `positive`; the other columns are ignored):
one row per novel-query group, `count` its rows in the windows, and the champion's top-k passages from the named
corpus beside it, so labelling is picking a passage rather than searching for one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gates.errors import EmbedgateGateError

EXPORT_COLUMNS = (
    "id",
    "anchor",
    "positive",
    "positive_id",
    "count",
    "windows",
    "variants",
    "nearest_reference",
)
NEW_DOC_PREFIX = "novel-doc-"
NOVEL_SPLIT = "novel"  # qrels split holding only the labelled queries kept for evaluation


class DriftLabelsError(EmbedgateGateError):
    """Bad input for `embedgate drift --export` / `--add-labels`."""


@dataclass(frozen=True)
class ExportResult:
    out: Path
    rows: int
    windows: tuple[str, ...]
    version: str
    dim: int
    top_k: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out), "windows": list(self.windows)}


@dataclass(frozen=True)
class LabelsResult:
    out: Path
    labelled: int
    unlabelled: int  # rows left without a positive: not added
    train: int
    test: int
    new_documents: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}


# ---- export ----
def export_novel(
    settings: Any,
    registry_root: Path,
    corpus: Path,
    out: Path,
    *,
    window_ids: Sequence[str] | None = None,
    top_k: int = 5,
) -> ExportResult:
    """Write the novel queries of `window_ids` (default: every drifted window of the served version) to `out`
    (.csv or .jsonl), each with the champion's `top_k` passages of `corpus` (a BEIR folder or an id/text table)."""
    from gates.reembed import ReembedError, read_corpus, resolve_version
    from service.drift.runner import read_summaries, served_version
    from service.drift.windows import list_windows

    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise DriftLabelsError(
            f"--export {out}: expected a .csv or .jsonl file name, got {out.suffix or 'none'!r}"
        )
    if top_k < 1:
        raise DriftLabelsError(f"--top-k: expected at least 1 passage per query, got {top_k}")
    summaries = {s.window_id: s for s in read_summaries(settings.summaries_dir)}
    served = served_version(registry_root, list_windows(settings.windows_dir))
    chosen = _chosen_windows(summaries, window_ids, served)
    groups = _novel_groups(chosen)
    try:
        texts = read_corpus(corpus)
        folder, dim, precision = resolve_version(registry_root, "champion", None)
    except ReembedError as err:
        raise DriftLabelsError(str(err)) from None
    ranked, scores = _retrieve(
        folder / "onnx", precision, dim, [g["anchor"] for g in groups], texts.texts, top_k
    )
    rows = []
    for group, hits, hit_scores in zip(groups, ranked, scores, strict=True):
        row = {
            "id": "novel-" + hashlib.sha256(group["anchor"].encode("utf-8")).hexdigest()[:12],
            "anchor": group["anchor"],
            "positive": "",
            "positive_id": "",
            "count": group["count"],
            "windows": " ".join(group["windows"]),
            "variants": " | ".join(group["variants"]),
            "nearest_reference": group["nearest_reference"] or "",
        }
        for rank, (hit, score) in enumerate(zip(hits, hit_scores, strict=True), start=1):
            row[f"rank_{rank}_id"] = texts.ids[hit]
            row[f"rank_{rank}_score"] = round(float(score), 4)
            row[f"rank_{rank}"] = texts.texts[hit]
        rows.append(row)
    _write_table(out, rows)
    return ExportResult(out, len(rows), tuple(s.window_id for s in chosen), folder.name, dim, top_k)


def _chosen_windows(
    summaries: dict[str, Any], window_ids: Sequence[str] | None, served: str | None
) -> list[Any]:
    if window_ids:
        unknown = [w for w in window_ids if w not in summaries]
        if unknown:
            raise DriftLabelsError(
                f"--window {unknown}: no verdict for these windows (judged ones end with "
                f"{sorted(summaries)[-3:] or 'none'}); judge them first with `embedgate drift`, or pick ids "
                f"from `embedgate drift --list`"
            )
        return [summaries[w] for w in window_ids]
    # without a champion (a registry elsewhere) and no kept window to name a version: every drifted window
    drifted = [s for s in summaries.values() if s.drifted and served in (None, s.model_version)]
    if not drifted:
        raise DriftLabelsError(
            f"no drifted window of the served version {served or '(none)'} among {len(summaries)} judged "
            f"window(s); pass --window ID to export another window's novel queries"
        )
    return drifted


def _novel_groups(chosen: list[Any]) -> list[dict[str, Any]]:
    """The groups of the chosen windows, one per first example (a query seen in two windows is one row)."""
    merged: dict[str, dict[str, Any]] = {}
    for summary in chosen:
        novel = summary.novel
        if novel is None:
            raise DriftLabelsError(
                f"window {summary.window_id} was judged without a novel-query list (an older verdict, or too "
                f"few rows at the reference dim); judge it again: embedgate drift --window {summary.window_id}"
            )
        if novel["texts"] != "kept":
            raise DriftLabelsError(
                f"window {summary.window_id}: its texts were {novel['texts']} at capture "
                f"(EMBEDGATE_DRIFT_TEXTS), so there is nothing readable to label; capture with "
                f"EMBEDGATE_DRIFT_TEXTS=keep to export novel queries"
            )
        for group in novel["groups"]:
            if not group["examples"]:
                continue
            anchor = group["examples"][0]
            entry = merged.setdefault(
                anchor,
                {
                    "anchor": anchor,
                    "count": 0,
                    "windows": [],
                    "variants": [],
                    "nearest_reference": group["nearest_reference_query"],
                },
            )
            entry["count"] += group["rows"]
            entry["windows"].append(summary.window_id)
            entry["variants"] += [t for t in group["examples"][1:] if t not in entry["variants"]]
    if not merged:
        raise DriftLabelsError(
            f"windows {[s.window_id for s in chosen]} hold no novel query: nothing to label"
        )
    return sorted(merged.values(), key=lambda g: -g["count"])


def _retrieve(
    onnx_dir: Path, precision: str, dim: int, queries: list[str], corpus: list[str], top_k: int
) -> tuple[list[list[int]], list[list[float]]]:
    """The champion's top-k passages per query, embedded as the service embeds them (query / document prompts)."""
    from service.model.embedder import OnnxEmbedder
    from service.model.prompts import apply_prompt, role_prompt

    embedder = OnnxEmbedder.from_export_dir(onnx_dir, precision=precision)
    prompts = embedder.info.prompts
    q = embedder.embed(apply_prompt(queries, role_prompt(prompts, "query")), dimensions=dim)
    d = embedder.embed(apply_prompt(corpus, role_prompt(prompts, "document")), dimensions=dim)
    similarity = q @ d.T
    k = min(top_k, len(corpus))
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order.tolist(), np.take_along_axis(similarity, order, axis=1).tolist()


def _write_table(out: Path, rows: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if out.suffix.lower() == ".jsonl":
        partial.write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
        )
    else:
        with open(partial, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    partial.replace(out)


# ---- labelled rows into the domain's data ----
def add_labels(
    labelled: Path, into: Path, out: Path, *, eval_share: float = 0.5, seed: int = 0
) -> LabelsResult:
    """A new BEIR folder `out`: `into` (the old training data) plus the labelled rows of `labelled`. Of the
    labelled queries, `eval_share` go to the `test` split (beside the old eval queries) and to a `novel` split of
    their own, the rest to `train`. A positive that is not a corpus passage is added as a new document."""
    from training.data.beir import load_beir

    if not 0 <= eval_share < 1:
        raise DriftLabelsError(f"--eval-share: expected a share in [0, 1), got {eval_share}")
    if out.exists():
        raise DriftLabelsError(f"--out {out} exists; name a new folder (the old data stays as it is)")
    frame = _read_labelled(labelled)
    old = load_beir(into)  # the data gate's reader: a bad folder fails here with its own fix
    corpus = _read_jsonl(into / "corpus.jsonl")
    by_text = {row["text"].strip(): row["_id"] for row in corpus}
    known_ids = {row["_id"] for row in corpus}
    old_queries = _read_jsonl(into / "queries.jsonl")
    taken = {row["_id"] for row in old_queries}
    rows, unlabelled, new_docs = [], 0, []
    for record in frame:
        positive = str(record.get("positive") or "").strip()
        if not positive:
            unlabelled += 1
            continue
        query_id = str(record.get("id") or "").strip()
        if not query_id or query_id in taken:
            raise DriftLabelsError(
                f"{labelled}: row {record['_row']} has id {query_id!r}, "
                + ("empty" if not query_id else f"already a query of {into}")
                + "; keep the ids `embedgate drift --export` wrote"
            )
        taken.add(query_id)
        doc_id = str(record.get("positive_id") or "").strip() or by_text.get(positive)
        if doc_id and doc_id not in known_ids:
            raise DriftLabelsError(
                f"{labelled}: row {record['_row']}: positive_id {doc_id!r} is not a document of {into}; leave "
                f"positive_id empty to add the positive as a new document"
            )
        if not doc_id:
            doc_id = f"{NEW_DOC_PREFIX}{len(new_docs) + 1:04d}"
            new_docs.append({"_id": doc_id, "title": "", "text": positive})
            by_text[positive] = doc_id
            known_ids.add(doc_id)
        rows.append((query_id, str(record["anchor"]).strip(), doc_id))
    if not rows:
        raise DriftLabelsError(
            f"{labelled}: no row has a positive; fill `positive` with the right passage (usually one of "
            f"rank_1 .. rank_k) for the rows you can label"
        )
    random.Random(seed).shuffle(rows)
    held = round(eval_share * len(rows))
    test, train = rows[:held], rows[held:]
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "qrels").mkdir(parents=True)
    _write_jsonl(partial / "corpus.jsonl", corpus + new_docs)
    _write_jsonl(partial / "queries.jsonl", old_queries + [{"_id": q, "text": t} for q, t, _ in rows])
    for split in sorted(set(old.splits) | {"train", "test"}):
        source = into / "qrels" / f"{split}.tsv"
        lines = (
            source.read_text(encoding="utf-8").splitlines()
            if source.is_file()
            else ["query-id\tcorpus-id\tscore"]
        )
        added = {"train": train, "test": test}.get(split, [])
        (partial / "qrels" / f"{split}.tsv").write_text(
            "\n".join(lines + [f"{q}\t{d}\t2" for q, _, d in added]) + "\n", encoding="utf-8"
        )
    if test:
        (partial / "qrels" / f"{NOVEL_SPLIT}.tsv").write_text(
            "\n".join(["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t2" for q, _, d in test]) + "\n",
            encoding="utf-8",
        )
    partial.replace(out)
    return LabelsResult(out, len(rows), unlabelled, len(train), len(test), len(new_docs))


def _read_labelled(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DriftLabelsError(
            f"--add-labels {path}: not found; pass the file `embedgate drift --export` wrote"
        )
    try:
        if path.suffix.lower() == ".jsonl":
            records = [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        elif path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8") as handle:
                records = list(csv.DictReader(handle))
        else:
            raise DriftLabelsError(
                f"--add-labels {path}: expected a .csv or .jsonl file, got {path.suffix!r}"
            )
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise DriftLabelsError(f"--add-labels {path}: not a readable table ({err})") from None
    missing = [c for c in ("id", "anchor", "positive") if records and c not in records[0]]
    if not records or missing:
        raise DriftLabelsError(
            f"--add-labels {path}: expected the columns id, anchor, positive (as exported), got "
            f"{sorted(records[0]) if records else 'no rows'}"
        )
    return [{**record, "_row": number} for number, record in enumerate(records, start=1)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
