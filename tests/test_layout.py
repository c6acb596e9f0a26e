"""The house rules (docs/architecture.md), read off the source: one import name, wings that reach
each other only through their faces and in one direction, no import circles, small modules.

Adding a module gets it checked for free; adding a wing means adding it to ``WINGS``.
"""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "labelgen", "calib", "demo", "student")
OLD_TOP_LEVEL = {*PACKAGES, "cli"}
MAX_LINES = 420

_COMMON = "edgedepth.common"
_LABELGEN = "edgedepth.labelgen"
_CALIB = "edgedepth.calib"
_MODEL, _EVALUATE = "edgedepth.student.model", "edgedepth.student.evaluate"
_TRAIN, _DEPLOY, _ABLATE = "edgedepth.student.train", "edgedepth.student.deploy", "edgedepth.student.ablate"
_LABELS = {_COMMON, _LABELGEN, _CALIB}
_STUDENT_WINGS = {_MODEL, _EVALUATE, _TRAIN, _DEPLOY, _ABLATE}

WINGS: dict[str, set[str]] = {
    # wing -> the wings it may import (through their faces): one direction, the floor at the bottom
    _COMMON: set(),
    _LABELGEN: {_COMMON},
    _CALIB: {_COMMON, _LABELGEN},
    _MODEL: {_COMMON},
    _EVALUATE: _LABELS | {_MODEL},
    _TRAIN: _LABELS | {_MODEL, _EVALUATE},
    _DEPLOY: _LABELS | {_MODEL, _EVALUATE},
    _ABLATE: _LABELS | _STUDENT_WINGS - {_ABLATE},
    "edgedepth.student": _LABELS | _STUDENT_WINGS,
    "edgedepth.demo": _LABELS | _STUDENT_WINGS | {"edgedepth.student"},
    "edgedepth.cli": _LABELS | _STUDENT_WINGS | {"edgedepth.student", "edgedepth.demo"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["edgedepth", *parts])


def _source_files() -> list[Path]:
    return sorted([p for package in PACKAGES for p in (ROOT / package).rglob("*.py")] + [ROOT / "cli.py"])


def _is_module(name: str) -> bool:
    if not name.startswith("edgedepth."):
        return False
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def wing_of(module: str) -> str:
    return max((w for w in WINGS if module == w or module.startswith(w + ".")), key=len)


@cache
def face_homes(face: str) -> dict[str, str]:
    """A face's ``_HOMES`` literal: public name -> home module."""
    init = ROOT / Path(*face.split(".")[1:]) / "__init__.py"
    if not init.is_file():
        return {}
    tree = ast.parse(init.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "_HOMES" for t in targets):
                return ast.literal_eval(node.value)
    return {}


def imports(path: Path) -> list[tuple[int, str, str | None]]:
    """Every edgedepth import in ``path``, function-level ones too: (line, module, imported name)."""
    found = []
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "edgedepth"]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] != "edgedepth":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.append(
                    (node.lineno, sub, None) if _is_module(sub) else (node.lineno, module, alias.name)
                )
    return found


def _resolve(module: str, name: str | None) -> str:
    """The module that really defines what an import brings in (a face's name -> its home)."""
    while name is not None and name in face_homes(module):
        module = face_homes(module)[name]
    return module


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_wing_reaches_another_only_through_its_face_and_downwards(path):
    here = wing_of(_module_name(path))
    wrong = []
    for line, module, _name in imports(path):
        there = wing_of(module)
        if there == here:
            continue
        if module != there:
            wrong.append(f"{path.name}:{line} imports {module}, inside {there}: import from its face {there}")
        elif there not in WINGS[here]:
            wrong.append(
                f"{path.name}:{line}: {here} may not import {there} (allowed: {sorted(WINGS[here])})"
            )
    assert not wrong, "\n".join(wrong)


def test_no_old_top_level_name_is_imported_anywhere():
    files = (
        _source_files() + sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    )
    wrong = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            wrong += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in OLD_TOP_LEVEL
            ]
    assert not wrong, "import these as edgedepth.<name>:\n" + "\n".join(wrong)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _source_files():
        me = _module_name(path)
        targets = {_resolve(module, name) for _, module, name in imports(path)}
        graph[me] = {t for t in targets if t != me and not me.startswith(t + ".")}  # not its own package
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others():
    circles = _circles(_graph())
    assert not circles, "import circles (function-level imports count):\n" + "\n".join(
        map(" <-> ".join, circles)
    )


@pytest.mark.parametrize("face", sorted(WINGS))
def test_every_name_a_face_shows_is_where_it_says(face):
    if face == "edgedepth.cli":
        return
    package = importlib.import_module(face)
    homes = face_homes(face)
    assert homes and sorted(package.__all__) == sorted({*homes, *getattr(package, "__all__", [])})
    for name, home in homes.items():
        assert getattr(package, name) is getattr(importlib.import_module(home), name), (face, name)
    with pytest.raises(AttributeError, match=f"module '{face}' has no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018


def test_no_module_is_over_the_size_a_newcomer_reads_at_once():
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _source_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not big, f"split these by concept (at most {MAX_LINES} lines):\n" + "\n".join(big)
