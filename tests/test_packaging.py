"""Layout rules: every component has the same shape and ships in the package."""

from __future__ import annotations

import ast
import tomllib

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
