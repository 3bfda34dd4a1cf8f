"""Layout rules: every component has the same shape and ships in the package."""

from __future__ import annotations

import ast
import tomllib

import pytest

from tests.conftest import REPO


def test_every_component_has_the_fixed_files_and_is_packaged():
    packages = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    stages = [p for p in (REPO / "components").iterdir() if p.is_dir() and not p.name.startswith("__")]
    assert stages
    for stage in stages:
        for name in ("__init__.py", "component.py", "metadata.yaml"):
            assert (stage / name).is_file(), f"components/{stage.name}/{name} missing"
        assert f"inkbooth.components.{stage.name}" in packages, f"add inkbooth.components.{stage.name} to pyproject"


def test_component_bodies_are_thin_and_call_the_library():
    for path in (REPO / "components").glob("*/component.py"):
        tree = ast.parse(path.read_text())
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert len(funcs) == 1, path
        body = funcs[0].body
        statements = [n for n in ast.walk(funcs[0]) if isinstance(n, ast.stmt)]
        assert len(statements) <= 20, f"{path}: logic belongs in the library, not the component"
        imports = [n for n in body if isinstance(n, ast.ImportFrom)]
        assert any(i.module and i.module.startswith("inkbooth") for i in imports), path
        decorator = ast.unparse(funcs[0].decorator_list[0])
        assert "base_image=image(" in decorator and "install_kfp_package=False" in decorator, path


def test_package_names_and_package_data_keys_are_module_names():
    """setuptools 80 (the images' locked build backend) refuses a package-data key that is no module name
    (a folder such as readers/printed-cyrillic); newer ones accept it, so only an image build noticed."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name in [*setuptools["packages"], *setuptools["package-data"]]:
        assert all(part.isidentifier() for part in name.split(".")), f"{name}: not a module name"


def _norm(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install, with what they require in turn (as installed here)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        if name == "inkbooth":
            todo += [Requirement(r) for extra in req.extras for r in _extras()[extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in (md.requires(req.name) or [])]
        except md.PackageNotFoundError:
            pass
    return seen


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"": project["dependencies"], **project["optional-dependencies"]}


@pytest.mark.parametrize(("code", "extra"), [("ocr", "ocr-cpu"), ("dreambooth", "train-cuda"), ("drawing", "train-cuda")])
def test_every_module_the_runtime_code_imports_is_installed_by_its_image_extra(code, extra):
    """A module imported by the OCR library but installed here only through another extra (scipy came in
    with mlflow) broke every page in the ocr-cpu image while the tests passed."""
    import importlib.metadata as md
    import sys

    installs = _closure(_extras()[""] + _extras()[extra])
    owners = md.packages_distributions()
    missing = {}
    for path in (REPO / "src" / "inkbooth" / code).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top == "inkbooth" or top in sys.stdlib_module_names:
                    continue
                dists = {_norm(d) for d in owners.get(top, [top])}
                if not dists & installs:
                    missing.setdefault(top, []).append(str(path.relative_to(REPO)))
    assert not missing, f"imported by inkbooth.{code} but not installed by inkbooth[{extra}]: {missing}"
