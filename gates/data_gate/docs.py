"""Great Expectations Data Docs for a data-gate report, and `write_report` (report.json + docs/, atomically).

Data Docs are rendered from an ephemeral GX context: a fresh one gets a filesystem `SiteBuilder` site whose
`base_directory` is a temp folder; the gate's suites and validation results are put in its stores and
`build_data_docs` renders the static site. No file-backed context (great_expectations.yml) is needed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gates.data_gate.errors import DataGateError
from gates.data_gate.report import DataGateReport

SITE = "embedgate_data_gate"


@dataclass(frozen=True)
class WrittenReport:
    report_json: Path
    docs_index: Path | None  # None when the report carries no GX results (e.g. built by hand)

    def to_dict(self) -> dict[str, str | None]:
        return {
            "report_json": str(self.report_json),
            "docs_index": None if self.docs_index is None else str(self.docs_index),
        }


def build_data_docs(report: DataGateReport, target: Path) -> Path:
    """Render the report's GX suites and validation results as a static site in `target`; returns index.html."""
    import great_expectations as gx
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from gates.data_gate.runner import quiet_context

    context = quiet_context()
    context.add_data_docs_site(
        SITE,
        {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(target.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    for run in report.gx_runs:
        suite = gx.ExpectationSuite(
            name=run.suite.name, expectations=[copy.copy(e) for e in run.suite.expectations]
        )  # copies: an expectation belongs to one suite
        context.suites.add(suite)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=run.suite.name),
            run_id=run.result.meta["run_id"],
            batch_identifier=run.table.name.replace("/", "_"),
        )
        context.validation_results_store.set(key, run.result)
    context.build_data_docs(site_names=[SITE])
    index = target / "index.html"
    if not index.is_file():
        raise DataGateError(f"{target}: Great Expectations wrote no index.html; Data Docs were not built")
    write_summary_page(report, target)
    return index


def write_summary_page(report: DataGateReport, docs: Path) -> Path:
    """docs/summary.html: every check in one self-contained page (inline CSS, no JavaScript), linking to GX's
    pages. GX's index.html lists validations with JavaScript and styles fetched from public CDNs, so on an
    offline machine it shows an empty list; this page works anywhere."""
    import html

    pages = {p.stem: p.relative_to(docs).as_posix() for p in sorted((docs / "validations").rglob("*.html"))}
    rows = []
    for r in sorted(report.results, key=lambda r: (r.passed, r.severity != "error", r.table, r.check)):
        status = "pass" if r.passed else ("FAIL" if r.severity == "error" else "warn")
        first = ", ".join(str(e.row) for e in r.examples) or ""
        offending = "" if r.unexpected_count is None else f"{r.unexpected_count:,}"
        link = pages.get(r.table.replace("/", "_"))
        table = f'<a href="{html.escape(link)}">{html.escape(r.table)}</a>' if link else html.escape(r.table)
        rows.append(
            f'<tr class="{status}"><td>{status}</td><td>{r.severity}</td><td>{table}</td>'
            f"<td>{html.escape(r.check)}</td><td>{html.escape(', '.join(r.columns))}</td>"
            f"<td>{offending}</td><td>{html.escape(first)}</td><td>{html.escape(r.description)}</td></tr>"
        )
    verdict = "PASSED" if report.passed else "FAILED"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>embedgate data gate: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;font-size:13px;text-align:left}}tr.FAIL td{{background:#fdd}}tr.warn td{{background:#ffd}}</style>
</head><body><h1>Data gate {verdict}: {html.escape(str(report.dataset.source))}</h1>
<p>{len(report.results)} checks, {len(report.failures)} failed errors, {len(report.warnings)} warnings.
Full Great Expectations pages: <a href="index.html">index.html</a> (needs internet for styles).</p>
<table><tr><th>status</th><th>severity</th><th>table</th><th>check</th><th>columns</th><th>offending</th>
<th>first rows</th><th>what it checks</th></tr>{"".join(rows)}</table></body></html>
"""
    out = docs / "summary.html"
    out.write_text(page, encoding="utf-8")
    return out


def write_report(report: DataGateReport, out_dir: str | Path) -> WrittenReport:
    """Write `out_dir/report.json` and `out_dir/docs/` (Data Docs).

    Everything is built in a temp folder beside `out_dir` first, then moved in with `os.replace`; report.json
    goes last, so a reader that finds it also finds the docs it describes. On failure nothing is changed.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataGateError(
            f"--out {out_dir}: expected a folder for report.json and docs/, got a file; pass a folder path"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it owner-only; it becomes out_dir, which others read
    try:
        docs_index = build_data_docs(report, staging / "docs") if report.gx_runs else None
        payload = json.dumps(report.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        with open(staging / "report.json", "w", encoding="utf-8") as handle:
            handle.write(payload + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if not out_dir.exists():
            os.replace(staging, out_dir)
        else:
            _swap_in(staging, out_dir, has_docs=docs_index is not None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return WrittenReport(out_dir / "report.json", out_dir / "docs" / "index.html" if docs_index else None)


def _swap_in(staging: Path, out_dir: Path, has_docs: bool) -> None:
    """Replace docs/ (a non-empty folder cannot be os.replace'd onto: move the old one aside first)."""
    if has_docs:
        old = out_dir / "docs"
        trash = staging / "old-docs"
        if old.exists():
            os.replace(old, trash)
        try:
            os.replace(staging / "docs", old)
        except OSError:
            if trash.exists():
                os.replace(trash, old)  # put the previous docs back: never leave the folder without docs
            raise
    os.replace(staging / "report.json", out_dir / "report.json")
