"""The package's import graph, read from the source (ast): no cycles, and imports run downward only.

Every import counts, at module level or inside a function (a circle hidden in a function still ties
two modules together), and so does the package ``__init__`` that importing a module runs. The
layers are the ones ``src/inkbooth/ocr/__init__.py`` and DESIGN.md describe.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

# Where each top-level package of the import name lives in the repository (pyproject's package-dir).
ROOTS = {"inkbooth": REPO / "src" / "inkbooth", "inkbooth.components": REPO / "components",
         "inkbooth.pipelines": REPO / "pipelines"}

# Within inkbooth.ocr: which subpackages each may import (itself always).
OCR_MAY_IMPORT = {
    "documents": set(),
    "layout": {"documents"},
    "recognition": {"documents"},
    "training": {"documents", "layout", "recognition"},
    "batch": {"documents", "layout", "recognition"},
}
# What the stages (ocr, dreambooth) and the base below them never import: the layers above.
ABOVE_STAGES = ("inkbooth.cli", "inkbooth.demo", "inkbooth.runs", "inkbooth.submit", "inkbooth.cluster",
                "inkbooth.lifecycle", "inkbooth.readers", "inkbooth.components", "inkbooth.pipelines",
                "inkbooth.manifests", "inkbooth.doctor", "inkbooth.doctor_checks", "inkbooth.doctor_cluster")
BASE = ("inkbooth.storage", "inkbooth.artifacts", "inkbooth.config", "inkbooth.runtime", "inkbooth.objectstore",
        "inkbooth.imaging", "inkbooth.shards", "inkbooth.lineage", "inkbooth.checkpoints", "inkbooth.models",
        "inkbooth.pickles", "inkbooth.tiny", "inkbooth._image", "inkbooth.backends", "inkbooth.schedules")


def modules() -> dict[str, Path]:
    """Every module of the package by its import name."""
    found = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source, with the parent packages
    whose ``__init__`` such an import runs (its own parents excepted: they are running already)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def module_of(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets |= {module_of(a.name) for a in node.names if a.name.startswith("inkbooth")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.startswith("inkbooth"):
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    targets.add(full if full in known else module_of(source))
    out = set()
    for target in targets - {None, name, "inkbooth"}:
        out.add(target)
        parent = target.rpartition(".")[0]
        while parent and parent != "inkbooth" and not (name == parent or name.startswith(parent + ".")):
            out.add(parent)
            parent = parent.rpartition(".")[0]
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def ocr_part(name: str) -> str | None:
    """The subpackage of inkbooth.ocr a module belongs to; "" for the stage re-exports beside them."""
    parts = name.split(".")
    if parts[:2] != ["inkbooth", "ocr"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in OCR_MAY_IMPORT else ""


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_checker_finds_cycles_and_upward_imports(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # A circle hidden inside a function counts; so does the package __init__ an import runs.
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from inkbooth.ocr.layout.lines import page_lines\n")
    known = {"inkbooth.ocr.recognition.mod": source, "inkbooth.ocr.layout.lines": source,
             "inkbooth.ocr.layout": source}
    assert imports_of("inkbooth.ocr.recognition.mod", source, known) == {"inkbooth.ocr.layout.lines",
                                                                        "inkbooth.ocr.layout"}
    assert ocr_part("inkbooth.ocr.layout.lines") == "layout" and ocr_part("inkbooth.ocr.export") == ""


def test_the_package_has_no_import_cycles(graph):
    assert cycles(graph) == [], "import cycles (move the shared names down; an import inside a function counts)"


def test_ocr_subpackages_import_only_downward(graph):
    broken = []
    for name, targets in graph.items():
        part = ocr_part(name)
        if not part:  # outside ocr, or the stage re-exports, which may take from every subpackage
            continue
        allowed = OCR_MAY_IMPORT[part] | {part}
        for target in targets:
            other = ocr_part(target)
            if target.startswith("inkbooth.ocr") and other not in allowed and target != "inkbooth.ocr":
                broken.append(f"{name} imports {target}")
    assert broken == [], "ocr layers: documents < layout, recognition < training, batch"


def test_nothing_in_the_library_imports_the_layers_above_it(graph):
    broken = []
    for name, targets in graph.items():
        if within(name, ("inkbooth.ocr", "inkbooth.dreambooth")):
            above = ABOVE_STAGES
            # reports.metrics (throughput, peak memory) sits below the stages; the reports above them.
            broken += [f"{name} imports {t}" for t in targets
                       if within(t, above) or (within(t, ("inkbooth.reports",)) and
                                               t not in ("inkbooth.reports", "inkbooth.reports.metrics"))]
        elif within(name, BASE):
            above = (*ABOVE_STAGES, "inkbooth.ocr", "inkbooth.dreambooth", "inkbooth.reports")
            broken += [f"{name} imports {t}" for t in targets if within(t, above)]
    assert broken == []


def test_every_subpackage_is_packaged():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    root = ROOTS["inkbooth"]
    on_disk = {"inkbooth." + ".".join(p.parent.relative_to(root).parts) if p.parent != root else "inkbooth"
               for p in root.rglob("__init__.py") if "__pycache__" not in p.parts}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_no_module_is_long_unless_it_says_why():
    """About 450 lines at most; a longer one says in its docstring why it reads better whole."""
    long = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > 460 and "reads better whole" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert long == []


def test_every_name_a_component_imports_resolves():
    """Compiled pipelines run the component bodies as they are: each name they import must exist
    where they import it from (the stage re-exports in inkbooth.ocr keep those paths)."""
    import importlib
    import importlib.util

    missing = []
    for path in sorted((REPO / "components").glob("*/component.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("inkbooth"):
                module = importlib.import_module(node.module)
                missing += [f"{path.parent.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert missing == []
