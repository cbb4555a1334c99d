"""The package layering of ARCHITECTURE.md, checked on the source: training imports nothing of ours, service
imports neither training nor gates nor torch (the served image stays small). The served process is also checked at
run time (tests/service/test_api_bento.py); this catches an import on a path that test does not exercise."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "training": {"service", "gates"},
    "service": {"training", "gates", "torch", "transformers", "sentence_transformers"},
}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, f"no modules found under {package}/"
    offenders = {str(m.relative_to(ROOT)): sorted(_imported_roots(m) & FORBIDDEN[package]) for m in modules}
    offenders = {name: bad for name, bad in offenders.items() if bad}
    assert not offenders, f"{package}/ may not import {sorted(FORBIDDEN[package])}: {offenders}"
