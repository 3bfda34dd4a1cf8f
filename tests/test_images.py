"""The component images, checked without a Docker engine: lint, build context, users, entry points."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from inkbooth import _image
from tests.conftest import REPO

DOCKERFILES = sorted((REPO / "docker").glob("*/Dockerfile"))


def test_every_variant_has_a_dockerfile_and_components_use_known_ones():
    assert {p.parent.name for p in DOCKERFILES} == set(_image.VARIANTS)
    used = set()
    for path in (REPO / "components").glob("*/component.py"):
        used |= set(re.findall(r'image\("([a-z0-9-]+)"\)', path.read_text()))
    assert used and used <= set(_image.VARIANTS)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerignore_allows(rel: str) -> bool:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    return any(rel == a or rel.startswith(a + "/") for a in allowed)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_build_context_and_stages(dockerfile):
    steps = _instructions(dockerfile)
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].startswith("${BASE} AS build") and froms[1] == "${BASE}", "multi-stage on ARG BASE"
    assert ("ARG", next(r for w, r in steps if w == "ARG" and r.startswith("BASE="))) in steps
    base = next(r for w, r in steps if w == "ARG" and r.startswith("BASE=")).split("=", 1)[1]
    assert ":" in base and not base.endswith(":latest"), "the base image is pinned by tag"
    for word, rest in steps:
        if word == "COPY" and "--from=" not in rest:
            *sources, _ = rest.split()
            for src in sources:
                assert (REPO / src).exists(), f"COPY source {src} does not exist"
                assert _dockerignore_allows(src), f"COPY source {src} is excluded by .dockerignore"
    final = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][-1]:]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final stage runs as a non-root user"
    runs = " ".join(rest for word, rest in final if word == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert tool not in runs, f"the final stage installs {tool!r}"
    extra = re.search(r'"\.\[([a-z0-9-]+)\]"', " ".join(r for w, r in steps if w == "RUN")).group(1)
    assert extra == dockerfile.parent.name, "each image installs the extra of its own name"
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra in extras
    assert ("ENTRYPOINT", '["inkbooth"]') in final


def test_entry_points_and_component_imports_resolve():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"inkbooth": "inkbooth.cli:main"}
    import importlib
    import importlib.util

    for path in (REPO / "components").glob("*/component.py"):
        func = next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef))
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("inkbooth"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    found = hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}")
                    assert found, f"{path}: {node.module}.{alias.name} does not exist"


def test_image_tag_is_the_package_version():
    from inkbooth import __version__

    assert _image.image("ocr-cpu") == f"ghcr.io/inkbooth/inkbooth-ocr-cpu:{__version__}"
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version == __version__, "pyproject.toml and inkbooth.__version__ must agree"
