"""The component images.

Offline (default suite): lint, build context, stages, users, locks in step with pyproject.toml, the
pip hook, engine detection, entry points.

The image proof (``make test-images``, marker ``images``): ocr-cpu and train-cuda as built by
``make images``, and every step of every compiled pipeline (ocr, dreambooth, ocr-train) run inside
its image from the compiled YAML's own command and arguments, as the image's user, on a read-only root with an emptyDir-like
/tmp and the embedded SeaweedFS as pipeline root (tests/imagerun.py).
"""

from __future__ import annotations

import ast
import collections
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from inkbooth import _image, runs
from tests.conftest import REPO

DOCKERFILES = sorted((REPO / "docker").glob("*/Dockerfile"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_variant_has_a_dockerfile_and_components_use_known_ones():
    assert {p.parent.name for p in DOCKERFILES} == set(_image.VARIANTS)
    used = set()
    for path in (REPO / "components").glob("*/component.py"):
        used |= set(re.findall(r'image\("([a-z0-9-]+)"\)', path.read_text()))
    assert used and used <= set(_image.VARIANTS)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=120)
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
    return any(rel == a or rel.startswith(a + "/") or fnmatch.fnmatch(rel, a) for a in allowed)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_build_context_and_stages(dockerfile):
    steps = _instructions(dockerfile)
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].startswith("${BASE} AS build") and froms[1] == "${BASE}", "multi-stage on ARG BASE"
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
    assert users and users[-1].split(":")[0] == "10001", "the final stage runs as the non-root user pods run as"
    assert not [rest for word, rest in final if word == "RUN"], \
        "the final stage runs nothing: no compiler, no pip, no build-time mount point can reach it"
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final, "only the venv leaves the build stage"
    env = " ".join(rest for word, rest in final if word == "ENV")
    for var in ("HOME=/tmp/", "XDG_CACHE_HOME=/tmp/", "HF_HOME=/tmp/", "INKBOOTH_CACHE=/tmp/"):
        assert var in env, f"{var}...: caches must live under /tmp, the root filesystem is read-only"
    assert ("ENTRYPOINT", '["inkbooth"]') in final


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_install_exactly_their_lock(dockerfile):
    variant = dockerfile.parent.name
    steps = _instructions(dockerfile)
    second_from = [i for i, (w, _) in enumerate(steps) if w == "FROM"][1]
    build = " ".join(rest for word, rest in steps[:second_from] if word == "RUN")
    assert f"COPY docker/{variant}/requirements.lock ./" in dockerfile.read_text()
    assert "--require-hashes --no-deps --no-build-isolation" in build and "-r requirements.lock" in build
    assert re.search(r"pip install --no-deps --no-build-isolation --no-index \.", build), "inkbooth itself, nothing else"
    assert "pip check" in build
    # The host's pip settings only as build secrets (never COPY'd, never in ENV).
    assert "--mount=type=secret,id=pip.conf,target=/run/pip/pip.conf" in build
    assert "pip.conf" not in " ".join(r for w, r in _instructions(dockerfile) if w in ("COPY", "ADD", "ENV"))


def _requirements(extra: str) -> list[str]:
    """The requirements an extra brings, with inkbooth[...] references and the core expanded."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    out, todo, seen = list(PYPROJECT["project"]["dependencies"]), [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in extras[name]:
            m = re.match(r"^inkbooth\[([a-z0-9-,]+)\]$", req)
            if m:
                todo += m.group(1).split(",")
            else:
                out.append(req)
    return out


@pytest.mark.parametrize("variant", _image.VARIANTS)
def test_each_lock_pins_with_hashes_what_its_extra_asks_for(variant):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    lock = (REPO / "docker" / variant / "requirements.lock").read_text().splitlines()
    pins = {}
    for line in lock:
        if line and not line.startswith("#"):
            m = re.fullmatch(r"([a-z0-9._-]+)==(\S+) --hash=sha256:[0-9a-f]{64}", line)
            assert m, f"{variant}: {line!r} is not 'name==version --hash=sha256:...'"
            pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    env = {"platform_system": "Linux", "sys_platform": "linux", "python_version": "3.11", "platform_machine": "x86_64"}
    for text in _requirements(variant):
        req = Requirement(text)
        if req.marker and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{variant}: {req.name} is not in the lock; run make lock-images"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{variant}: the lock's {name}=={pins[name]} does not meet {req}; run make lock-images"
    assert {"setuptools", "wheel"} <= set(pins), "the tools that build inkbooth itself are locked too"
    torch = pins[canonicalize_name("torch")]
    assert (torch.local == "cpu") == (variant == "ocr-cpu"), "CPU torch in ocr-cpu only; PyPI's CUDA torch elsewhere"
    assert [line for line in lock if line.startswith("torch==")] and sum(line.startswith("torch==") for line in lock) == 1


def test_the_pip_hook_hands_over_index_and_ca_and_only_the_locked_wheels(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "unrelated-1.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"whl")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.mirror.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///nowhere/simple https://extra.example/simple")
    monkeypatch.setenv("PIP_CERT", str(ca))
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    for variant, expected in (("ocr-cpu", ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]),
                              ("train-cuda", [])):
        out = tmp_path / "hook" / variant
        subprocess.run([sys.executable, str(REPO / "scripts" / "pip-hook.py"), variant, str(out), "--wheels"],
                       check=True, capture_output=True, text=True, timeout=60)
        conf = (out / "pip.conf").read_text()
        assert "index-url = https://pypi.mirror.example/simple" in conf
        assert "extra-index-url = https://extra.example/simple" in conf and "file://" not in conf
        assert "cert = /run/pip/ca.pem" in conf and (out / "ca.pem").read_text() == ca.read_text()
        assert sorted(p.name for p in (out / "wheels").iterdir()) == expected, "a +cpu torch never reaches CUDA builds"
        assert ("find-links = /run/pip-wheels" in conf) == bool(expected)


def test_make_images_detects_the_engine_and_passes_base_and_hook(tmp_path):
    """With a fake buildah first on PATH (and no working docker or podman), `make images` runs it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    for tool, script in (("docker", "exit 1"), ("podman", "exit 1"),
                         ("buildah", f'echo "$@" >> {calls}\ncase "$1" in inspect) echo sha256:1;; images) echo 9MB;; esac')):
        (fake / tool).write_text(f"#!/bin/sh\n{script}\n")
        (fake / tool).chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", IMAGES_OUT=str(tmp_path / "out"))
    run = subprocess.run(["make", "-s", "-C", str(REPO), "images", "VARIANTS=ocr-cpu", "BASE=localhost/base:1"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    bud = next(line for line in calls.read_text().splitlines() if line.startswith("bud"))
    assert "--isolation chroot" in bud and "--build-arg BASE=localhost/base:1" in bud
    assert "-f docker/ocr-cpu/Dockerfile" in bud and f"-t ghcr.io/inkbooth/inkbooth-ocr-cpu:{_version()}" in bud
    assert f"--secret id=pip.conf,src={tmp_path}/out/pip-hook/ocr-cpu/pip.conf" in bud
    assert "make images: buildah" in run.stdout
    result = json.loads((tmp_path / "out" / "ocr-cpu.json").read_text())
    assert result["engine"] == "buildah" and result["image"].endswith(f"inkbooth-ocr-cpu:{_version()}")


def _version() -> str:
    from inkbooth import __version__

    return __version__


def test_entry_points_and_component_imports_resolve():
    scripts = PYPROJECT["project"]["scripts"]
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
    assert _image.image("ocr-cpu") == f"ghcr.io/inkbooth/inkbooth-ocr-cpu:{_version()}"
    version = PYPROJECT["project"]["version"]
    assert version == _version(), "pyproject.toml and inkbooth.__version__ must agree"


# ------------------------------------------------------------------------------------------------
# The image proof: make test-images
# ------------------------------------------------------------------------------------------------

# Each compiled pipeline and the image of its main stage (the others run in ocr-cpu).
PROOF = {"ocr": "ocr-cpu", "dreambooth": "train-cuda", "ocr-train": "train-cuda"}
PIPES = "s3://inkbooth-pipelines/v2/artifacts"

# The runs the proof submits; their inputs are put on the store by the proof tests below.
RUNS = {
    "ocr": runs.OCRRun(
        model="s3://inkbooth-models/reader-latin", documents="s3://inkbooth-data/documents",
        output="s3://inkbooth-data/ocr", num_shards=2, ground_truth="s3://inkbooth-data/ground-truth",
        export={"parity_images": 8, "variants": ["fp32", "int8"]}, recognize={"num_beams": 1}),
    "dreambooth": runs.DreamBoothRun(
        base_model="s3://inkbooth-models/base/tiny-sd", instance_images="s3://inkbooth-data/subjects/ball",
        prior_output="s3://inkbooth-data/class-images", registry="s3://inkbooth-models/models", prior_shards=2,
        prior={"num_images": 2, "steps": 3}, train={"max_train_steps": 2, "checkpoint_every": 1, "snapshot_every": 1},
        evaluate={"clip_model": "s3://inkbooth-models/judges/clip", "dino_model": "s3://inkbooth-models/judges/dino",
                  "prompt_set": "custom", "prompts": ["a photo of {identifier} {cls}"], "images_per_prompt": 2,
                  "class_images": 2, "steps": 2, "select": "best"},
        export={"name": "ball"}, sample={"prompts": ["a photo of sks dog"], "steps": 2, "images_per_prompt": 1}),
    "ocr-train": runs.OCRTrainRun(
        base_model="s3://inkbooth-models/base/tiny-reader", data="s3://inkbooth-data/lines",
        registry="s3://inkbooth-models/models", lines={"holdout": 0.2},
        finetune={"max_steps": 4, "checkpoint_every": 2, "batch_size": 12, "learning_rate": 3e-3, "warmup_steps": 2,
                  "lr_scheduler": "constant", "log_every": 2, "eval_every": 0, "eval_lines": 8, "threads": 1},
        # Four steps from random weights: the model cannot read yet, so its INT8 text is far from fp32's.
        export={"variants": ["fp32", "int8"], "parity_images": 8, "max_int8_cer": 1.0, "min_fp32_exact": 0.5},
        evaluate={"num_beams": 1}, register={"name": "invoices"}),
}


def proof_arguments(name: str) -> dict:
    """The pipeline arguments of the proof's run: what `inkbooth submit` sends (validated, s3:// only,
    the Secret's name), with no KFP API for the exit task to ask (there is none here)."""
    from inkbooth import submit

    return {**submit._arguments(RUNS[name], submit.Endpoint(host="http://kfp.invalid")), "kfp_api": ""}


def _ir(name: str) -> dict:
    import yaml

    return next(yaml.safe_load_all((REPO / "pipelines" / runs.get(name).yaml).read_text()))


@pytest.mark.parametrize("name", PROOF)
def test_the_proof_passes_what_the_compiled_pipeline_declares(name):
    """Offline: the proof's arguments fit the compiled YAML's inputs, and its steps name only the images
    the proof builds (a stage moved to another image would otherwise go unproven)."""
    ir = _ir(name)
    declared = ir["root"]["inputDefinitions"]["parameters"]
    args = proof_arguments(name)
    assert set(args) <= set(declared), f"not inputs of pipelines/{name}.yaml: {set(args) - set(declared)}"
    assert {k for k, v in declared.items() if not v.get("isOptional")} <= set(args)
    kinds = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": (int, float), "BOOLEAN": bool, "STRUCT": dict,
             "LIST": list}
    for key, value in args.items():
        assert isinstance(value, kinds[declared[key]["parameterType"]]), (key, value, declared[key])
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values() if "container" in e}
    assert images <= {_image.image(v) for v in PROOF.values()}, images


class _FakeImage:
    """Stands in for a built image offline: records each command and plays a step with ``act``."""

    def __init__(self, act) -> None:
        self.act = act
        self.commands: list[list[str]] = []

    def run(self, command, *, env, tmp, s3, timeout=1800):
        self.commands.append(command)
        code = self.act(json.loads(command[command.index("--executor_input") + 1]), tmp, s3)
        return subprocess.CompletedProcess(command, code, "", "failed on purpose" if code else "")


def test_the_harness_runs_the_compiled_command_with_the_proofs_arguments(s3_server, tmp_path, monkeypatch):
    """Offline: kfp.local takes the proof's arguments for pipelines/ocr.yaml and hands the harness each
    step's compiled command and arguments, untouched but for the executor input, which carries the
    proof's values and points at /s3 (the S3 pipeline root) and /tmp; failed steps are retried as the
    IR says, then the exit task runs; a failed step uploads nothing."""
    from kfp import components
    from kfp.local.orchestrator import task_executor

    from tests.imagerun import kfp_local_in_images

    slept: list[float] = []
    monkeypatch.setattr(task_executor, "time", type("Clock", (), {"sleep": staticmethod(slept.append)}))
    image = _FakeImage(lambda executor_input, tmp, s3: 1)
    args = proof_arguments("ocr")
    pipeline = components.load_component_from_file(str(REPO / "pipelines" / "ocr.yaml"))
    (tmp_path / "work").mkdir()
    root = f"s3://test-{os.getpid()}-harness/v2/artifacts"
    with kfp_local_in_images(tmp_path / "root", root, {}, tmp_path / "work") as runner:
        runner._images = {ref: image for ref in {_image.image(v) for v in PROOF.values()}}
        pipeline(**args)
    ir = _ir("ocr")
    tasks = {**ir["components"]["comp-exit-handler-1"]["dag"]["tasks"], **ir["root"]["dag"]["tasks"]}
    names = [s["step"] for s in runner.steps]
    attempts = {n: t.get("retryPolicy", {}).get("maxRetryCount", 0) + 1 for n, t in tasks.items()}
    independent = {n for n, t in ir["components"]["comp-exit-handler-1"]["dag"]["tasks"].items()
                   if not t.get("dependentTasks")}
    assert independent == {"pin-model", "plan-ocr"}
    assert collections.Counter(names[:-attempts["finish-run"]]) == {n: attempts[n] for n in independent}, names
    assert names[-attempts["finish-run"]:] == ["finish-run"] * attempts["finish-run"], "then the exit task"
    assert slept[:2] == [30, 60], "retried with the IR's backoff"
    for step, command in zip(runner.steps, image.commands):
        container = ir["deploymentSpec"]["executors"][tasks[step["step"]]["componentRef"]["name"].replace(
            "comp-", "exec-")]["container"]
        at = command.index("--executor_input") + 1
        assert command == container["command"] + [command[at] if a == "{{$}}" else a for a in container["args"]]
        assert step["image"] == container["image"] and step["returncode"] == 1
        executor_input = json.loads(command[at])
        for key, spec in tasks[step["step"]].get("inputs", {}).get("parameters", {}).items():
            source = spec.get("componentInputParameter", "").removeprefix("pipelinechannel--")
            if source in args:
                assert executor_input["inputs"]["parameterValues"][key] == args[source], (step["step"], key)
        assert executor_input["outputs"]["outputFile"] == "/tmp/kfp/outputs/executor_output.json"
        outputs = [a["uri"] for v in executor_input["outputs"].get("artifacts", {}).values() for a in v["artifacts"]]
        assert all(u.startswith(root + "/") and f"/{step['step']}/" in u for u in outputs), outputs
        assert all(spec["outputFile"].startswith("/tmp/kfp/outputs/")
                   for spec in executor_input["outputs"].get("parameters", {}).values())
    plan = json.loads(image.commands[names.index("plan-ocr")][image.commands[0].index("--executor_input") + 1])
    assert plan["inputs"]["parameterValues"]["documents"] == args["documents"] == RUNS["ocr"].documents
    assert not list((tmp_path / "root").rglob("executor_output.json")), "a failed step hands kfp.local nothing"


def test_the_harness_moves_artifacts_through_s3_and_catches_stray_writes(bucket, tmp_path):
    """Offline: inputs on the S3 pipeline root reach the step under /s3, declared outputs go back to S3
    and the step's output file to kfp.local; a write under /s3 beside the outputs fails the step."""
    from inkbooth import storage
    from tests.imagerun import StepRunner

    local_root, s3_root = tmp_path / "root", f"{bucket}/v2/artifacts"
    storage.write_text(f"{s3_root}/run-1/plan/plan/shards.json", "[1, 2]")

    def executor_input(task: str) -> dict:
        return {"inputs": {"artifacts": {"plan": {"artifacts": [{"uri": f"{local_root}/run-1/plan/plan"}]}}},
                "outputs": {"artifacts": {"result": {"artifacts": [{"uri": f"{local_root}/run-1/{task}/result"}]}},
                            "parameters": {"n": {"outputFile": f"{local_root}/run-1/{task}/n"}},
                            "outputFile": f"{local_root}/run-1/{task}/executor_output.json"}}

    def act(stray: bool):
        def play(ei, tmp, s3):
            plan = ei["inputs"]["artifacts"]["plan"]["artifacts"][0]["uri"]
            assert plan == f"{s3_root}/run-1/plan/plan"
            data = (s3 / plan.removeprefix("s3://") / "shards.json").read_text()
            out = s3 / ei["outputs"]["artifacts"]["result"]["artifacts"][0]["uri"].removeprefix("s3://")
            out.write_text(data)
            assert ei["outputs"]["outputFile"].startswith("/tmp/")
            (tmp / ei["outputs"]["outputFile"].removeprefix("/tmp/")).write_text("{}")
            (tmp / ei["outputs"]["parameters"]["n"]["outputFile"].removeprefix("/tmp/")).write_text("2")
            if stray:
                (s3 / plan.removeprefix("s3://") / "shards.json").write_text("[]")
            return 0
        return play

    (tmp_path / "work").mkdir()
    runner = StepRunner(local_root, s3_root, {}, tmp_path / "work")
    for task, stray in (("good", False), ("stray", True)):
        runner._images = {"img": _FakeImage(act(stray))}
        command = ["python", "--executor_input", json.dumps(executor_input(task)), "--function_to_execute", "f"]
        assert runner.run_step("img", command, {}) is not stray
    good, bad = runner.steps
    assert good["stray"] == [] and storage.read_text(f"{s3_root}/run-1/good/result") == "[1, 2]"
    assert (local_root / "run-1" / "good" / "executor_output.json").read_text() == "{}"
    assert (local_root / "run-1" / "good" / "n").read_text() == "2"
    assert bad["returncode"] == 0 and bad["stray"] == [f"{s3_root.removeprefix('s3://')}/run-1/plan/plan/shards.json"]
    assert not storage.exists(f"{s3_root}/run-1/stray/result"), "a step that wrote stray files uploads nothing"
    assert storage.read_text(f"{s3_root}/run-1/plan/plan/shards.json") == "[1, 2]"
    assert not list((tmp_path / "work").iterdir()), "each step's sandbox folders are removed"


@pytest.fixture(scope="module")
def image_of():
    """The locally built image of a variant (tests/imagerun.Image); fails if it is not built."""
    if not shutil.which("buildah") or os.geteuid() != 0:
        pytest.fail("the image proof needs root and buildah (apt-get install buildah)")
    from tests.imagerun import Image

    found = {}

    def get(variant: str) -> Image:
        if variant not in found:
            ref = _image.image(variant)
            try:
                found[variant] = Image(ref)
            except subprocess.CalledProcessError:
                pytest.fail(f"{ref} is not built here: make images VARIANTS='ocr-cpu train-cuda' (make test-images does)")
        return found[variant]

    return get


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from inkbooth import objectstore, storage

    s3 = objectstore.EmbeddedS3(tmp_path_factory.mktemp("image-proof-store")).start()
    with objectstore.environment(s3.env()):
        for bucket in ("inkbooth-pipelines", "inkbooth-models", "inkbooth-data"):
            storage.ensure_bucket(f"s3://{bucket}")
        yield s3
    s3.stop()


def _step_env(store) -> dict[str, str]:
    return {**store.env(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
@pytest.mark.images
def test_images_keep_nothing_of_the_build_host(image_of):
    for variant in PROOF.values():
        image = image_of(variant)
        assert image.user == "10001:10001", variant
        assert image.env["HOME"].startswith("/tmp/") and image.env["XDG_CACHE_HOME"].startswith("/tmp/")
        with image.rootfs() as root:
            assert not (root / "run" / "pip").exists() and not (root / "run" / "pip-wheels").exists()
            assert not list(root.glob("etc/pip.conf")) and not list(root.glob("etc/xdg/pip"))
            assert not list((root / "opt" / "venv").glob("pip.conf"))
            assert not (root / "src").exists(), "the build stage's sources stay in the build stage"
        log = REPO / "build" / "images" / f"{variant}.log"
        if log.exists():  # one torch, whatever else asks for it (bitsandbytes does)
            text = log.read_text()
            fetched = re.findall(r"(?:Downloading|Processing) \S*torch-\d[^ /]*\.whl", text)
            assert len(fetched) <= 1, fetched


@pytest.mark.slow
@pytest.mark.images
def test_the_sandbox_refuses_writes_outside_tmp_and_artifacts(image_of, tmp_path):
    image = image_of("ocr-cpu")
    (tmp_path / "t").mkdir()
    (tmp_path / "s").mkdir()
    result = image.run(["python", "-c", "open('/opt/venv/x', 'w')"], env={}, tmp=tmp_path / "t", s3=tmp_path / "s")
    assert result.returncode != 0 and "Read-only file system" in result.stderr
    ok = image.run(["python", "-c", "import os; open('/tmp/x', 'w').write(str(os.getuid()))"], env={},
                   tmp=tmp_path / "t", s3=tmp_path / "s")
    assert ok.returncode == 0 and (tmp_path / "t" / "x").read_text() == "10001"


def _run_compiled(name: str, store, tmp_path) -> tuple[list[dict], float]:
    """Run the compiled pipelines/<name>.yaml with the proof's arguments, as `inkbooth submit` sends them."""
    from kfp import components

    from tests.imagerun import kfp_local_in_images

    pipeline = components.load_component_from_file(str(REPO / "pipelines" / runs.get(name).yaml))
    (tmp_path / "work").mkdir()
    started = time.perf_counter()
    with kfp_local_in_images(tmp_path / "root", PIPES, _step_env(store), tmp_path / "work") as runner:
        pipeline(**proof_arguments(name))
    seconds = time.perf_counter() - started
    report = [{k: s[k] for k in ("step", "returncode", "stray")} for s in runner.steps]
    print(f"\n{name}: {len(runner.steps)} steps in their images in {seconds:.0f} s: {json.dumps(report)}")
    for step in runner.steps:
        assert step["image"] in {_image.image(v) for v in PROOF.values()}, step
        assert step["returncode"] == 0 and not step["stray"], (
            f"{step['step']} failed in {step['image']} (stray writes: {step['stray']}):\n{step['stderr']}")
    return runner.steps, seconds


@pytest.mark.slow
@pytest.mark.images
def test_the_ocr_pipeline_runs_in_its_image(image_of, store, tmp_path):
    image_of("ocr-cpu")
    from inkbooth import artifacts, demo, readers, storage

    storage.upload_dir(readers.path("latin"), "s3://inkbooth-models/reader-latin")
    expected = demo.make_documents(tmp_path / "local")
    storage.upload_dir(tmp_path / "local" / "documents", "s3://inkbooth-data/documents")
    storage.upload_dir(tmp_path / "local" / "ground-truth", "s3://inkbooth-data/ground-truth")
    steps, _ = _run_compiled("ocr", store, tmp_path)
    names = [s["step"] for s in steps]
    assert {s["image"] for s in steps} == {_image.image("ocr-cpu")}
    assert names.count("recognize-shard") == 2 and {"pin-model", "export-trocr", "plan-ocr", "merge-ocr",
                                                    "finish-run"} <= set(names)
    summary = demo.check_results("s3://inkbooth-data/ocr/results", expected)  # the reader reads, in the image too
    assert summary["line_records"] == sum(expected.values())
    assert artifacts.read_manifest("s3://inkbooth-data/ocr/results").kind == "ocr-results"
    assert any(k.startswith("inkbooth-ocr-") for k in storage.list_files(PIPES)), "artifacts on the S3 pipeline root"


@pytest.mark.slow
@pytest.mark.images
def test_the_dreambooth_pipeline_runs_in_its_image(image_of, store, tmp_path):
    image_of("train-cuda"), image_of("ocr-cpu")  # the exit task runs in ocr-cpu
    from inkbooth import artifacts, storage, tiny
    from inkbooth.demo import subject_images

    storage.upload_dir(tiny.build_tiny_sd(tmp_path / "sd"), "s3://inkbooth-models/base/tiny-sd")
    clip, dino = tiny.build_tiny_judges(tmp_path / "judges")
    storage.upload_dir(clip, "s3://inkbooth-models/judges/clip")
    storage.upload_dir(dino, "s3://inkbooth-models/judges/dino")
    subject_images(tmp_path / "subject", 3)
    storage.upload_dir(tmp_path / "subject", "s3://inkbooth-data/subjects/ball")
    steps, _ = _run_compiled("dreambooth", store, tmp_path)
    names = [s["step"] for s in steps]
    assert {s["image"] for s in steps if s["step"] in ("generate-prior", "train", "evaluate-dreambooth", "export-model",
                                                        "sample-model")} == {_image.image("train-cuda")}
    assert names.count("generate-prior") == 2 and {"plan-prior", "train", "evaluate-dreambooth", "export-model",
                                                   "sample-model", "finish-run"} <= set(names)
    version = artifacts.read_manifest("s3://inkbooth-models/models/ball/v1")
    assert version.lineage["selected_step"] in (1, 2) and "select: best" in version.lineage["selection"]
    # Training checkpointed into the run's root on S3; the exit task removed them once the run succeeded.
    runs_ = {k.split("/")[0] for k in storage.list_files(PIPES) if k.startswith("inkbooth-dreambooth-")}
    assert runs_ and not any(storage.list_files(f"{PIPES}/{r}/checkpoints") for r in runs_)


@pytest.mark.slow
@pytest.mark.images
def test_the_ocr_train_pipeline_runs_in_its_images(image_of, store, tmp_path):
    image_of("train-cuda"), image_of("ocr-cpu")  # fine-tuning in train-cuda, the rest in ocr-cpu
    from inkbooth import artifacts, storage, tiny
    from tests.test_finetune import SMALL, write_labelled_lines

    storage.upload_dir(tiny.build_tiny_trocr(tmp_path / "reader", SMALL), "s3://inkbooth-models/base/tiny-reader")
    storage.upload_dir(write_labelled_lines(tmp_path / "lines", 40, seed=11), "s3://inkbooth-data/lines")
    steps, _ = _run_compiled("ocr-train", store, tmp_path)
    names = [s["step"] for s in steps]
    assert {s["image"] for s in steps if s["step"] == "finetune"} == {_image.image("train-cuda")}
    assert {s["image"] for s in steps if s["step"] != "finetune"} == {_image.image("ocr-cpu")}
    assert {"pin-model", "prepare-lines", "finetune", "export-trocr", "evaluate", "register", "finish-run"} <= set(names)
    m = artifacts.read_manifest("s3://inkbooth-models/models/invoices/v1")
    assert {"heldout_cer", "eval_fp32_cer", "eval_int8_cer"} <= set(m.metrics)
    runs_ = {k.split("/")[0] for k in storage.list_files(PIPES) if k.startswith("inkbooth-ocr-train-")}
    assert runs_ and not any(storage.list_files(f"{PIPES}/{r}/checkpoints") for r in runs_)
