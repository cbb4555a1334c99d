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


def _all_imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (inside functions too): `from a.b import c` names a.b and a.b.c."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _imported_roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _all_imports(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, f"no modules found under {package}/"
    offenders = {str(m.relative_to(ROOT)): sorted(_imported_roots(m) & FORBIDDEN[package]) for m in modules}
    offenders = {name: bad for name, bad in offenders.items() if bad}
    assert not offenders, f"{package}/ may not import {sorted(FORBIDDEN[package])}: {offenders}"


# ---- no import circles among our modules ----
# A circle makes import order matter (a half-initialised module raises ImportError far from the cause) and ties
# modules that should change alone. Module-level imports count, `if TYPE_CHECKING:` ones too (a type-only circle
# is the same tie); an import inside a function runs later and does not.
PACKAGES = ("service", "training", "gates")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        # if/try/with/class bodies run at import; a function's body runs later
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for field in ("body", "orelse", "finalbody", "handlers"):
                found += _module_level_imports(getattr(node, field, None) or [])
    return found


def _imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules `name` imports at module level: `from a.b import c` names a.b, and a.b.c when c is a module."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
            continue
        base = node.module or ""
        if node.level:  # relative: `from . import x`, `from ..a import b`
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return (targets & known) - {name}


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    paths = {_module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}
    return {name: _imported_modules(name, path, set(paths)) for name, path in paths.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per back edge a depth-first search meets (each as a path that returns to its start)."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 100, f"found only {len(graph)} modules under {PACKAGES}: is ROOT right?"
    cycles = [" -> ".join(cycle) for cycle in import_cycles(graph)]
    assert not cycles, (
        "module-level import circles (move what both sides need into a small module they both import, or pass "
        "it in):\n" + "\n".join(cycles)
    )


def test_cycle_finder_sees_circles_and_only_circles(tmp_path):
    """The finder on a throw-away package: a circle through three modules (one leg a relative, TYPE_CHECKING
    import) is found; an import inside a function and a one-way chain are not."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n"
    )
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text(
        "from pkg import a\n\ndef later():\n    from pkg import d\n    import pkg.e\n"
    )
    (package / "e.py").write_text("def later():\n    from pkg.d import later\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.d"] == {"pkg", "pkg.a"} and graph["pkg.e"] == set()
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


# ---- layers inside service/ and training/ (ARCHITECTURE.md, "Inside service/ and training/") ----
# Each subpackage may import only the subpackages listed (any import, inside functions too: a lazy import is still
# a dependency). Top-level modules (`service.errors`, `training.config`, ...) are shared by all and not listed.
# What is not in the table (the top-level composition: service.app, service.runtime) may import anything.
MAY_IMPORT = {
    "service.storage": set(),
    "service.registry": {"service.storage"},
    "service.model": {"service.registry", "service.storage"},
    "service.batching": {"service.model"},
    "service.versions": {"service.model", "service.registry", "service.storage"},
    "service.drift": {"service.model", "service.registry", "service.storage"},
    "service.api": {"service.model", "service.versions", "service.split"},
    "service.split": {"service.api", "service.model", "service.versions"},
    "training.data": set(),
    "training.mining": {"training.data"},
    "training.finetune": {"training.data", "training.mining", "training.matryoshka"},
    "training.matryoshka": {"training.data", "training.finetune"},
    "training.export": {"training.data", "training.finetune"},
}


def _subpackage(module: str) -> str | None:
    """`service.api.routes` -> `service.api`; a top-level module (`service.errors`) -> None."""
    parts = module.split(".")
    if len(parts) < 2 or not (ROOT / parts[0] / parts[1]).is_dir():
        return None
    return ".".join(parts[:2])


def test_subpackages_import_only_their_lower_layers():
    offenders = {}
    for owner, allowed in MAY_IMPORT.items():
        folder = ROOT / owner.replace(".", "/")
        assert (folder / "__init__.py").is_file(), f"{owner} is in MAY_IMPORT but {folder} is not a package"
        for path in sorted(folder.rglob("*.py")):
            reached = {_subpackage(m) for m in _all_imports(path)} - {None, owner}
            bad = sorted(s for s in reached if s.split(".")[0] == owner.split(".")[0] and s not in allowed)
            if bad:
                offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, f"imports against the layers of MAY_IMPORT: {offenders}"


def test_every_subpackage_has_a_layer_rule():
    """A new subpackage gets a row in MAY_IMPORT, so its place in the layers is a decision, not an accident."""
    found = {
        f"{package}.{folder.name}"
        for package in ("service", "training")
        for folder in (ROOT / package).iterdir()
        if (folder / "__init__.py").is_file()
    }
    packaged_data = {"training.data"}  # code and the packaged datasets it loads
    assert found - set(MAY_IMPORT) - packaged_data == set()
