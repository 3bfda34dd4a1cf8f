"""Run compiled pipelines with every step inside its real image, as a cluster would (``make test-images``).

kfp.local does the orchestration from the compiled YAML (DAG, ParallelFor, Collected, the exit
handler, placeholders, executor input); each step then runs here instead of in Docker:

* in the image's root filesystem (``buildah from`` + ``buildah mount``), mounted **read-only**, as
  the image's user, with its environment, in fresh mount and PID namespaces on the host network;
* with an empty, world-writable ``/tmp`` (an emptyDir) and ``/s3`` for artifacts, as KFP's
  launcher provides them: the artifacts live on the S3 pipeline root (``s3://<bucket>/v2/artifacts/
  <run>/<task>/<output>``); inputs are downloaded to ``/s3/<bucket>/<key>`` before the step and
  outputs uploaded after it;
* the command and arguments are the compiled YAML's own, with kfp.local's executor input, its
  local artifact paths mapped onto the S3 pipeline root and its output file moved under ``/tmp``.

A step fails if its command fails or if it wrote anything under ``/s3`` besides its outputs; writes
anywhere else but ``/tmp`` fail in the step itself (read-only root). Needs root, buildah, unshare.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inkbooth import storage

_SANDBOX = r"""
set -e
root=$1; tmp=$2; s3=$3; user=$4; shift 4
mount --bind "$root" "$root"
mount --bind "$tmp" "$root/tmp"
mount --bind "$s3" "$root/s3"
mount -t proc proc "$root/proc"
mount -t tmpfs -o size=16m,mode=755 tmpfs "$root/dev"
for n in null zero random urandom full tty; do touch "$root/dev/$n"; mount --bind "/dev/$n" "$root/dev/$n"; done
mkdir "$root/dev/shm"; mount -t tmpfs -o size=2g,mode=1777 tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
mount -o remount,bind,ro "$root"
exec chroot --userspec="$user" "$root" "$@"
"""


def _buildah(*args: str) -> str:
    return subprocess.run(["buildah", *args], check=True, capture_output=True, text=True, timeout=600).stdout.strip()


class Image:
    """A local image: its config (user, environment, working directory) and a way to run in it."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        config = json.loads(_buildah("inspect", "--type", "image", reference))["OCIv1"]["config"]
        self.user = config.get("User") or "0:0"
        if ":" not in self.user:
            self.user = f"{self.user}:{self.user}"
        self.env = dict(e.split("=", 1) for e in config.get("Env") or [])
        self.workdir = config.get("WorkingDir") or "/"

    @contextlib.contextmanager
    def rootfs(self) -> Iterator[Path]:
        """A fresh working container's root filesystem, with the mount points a runtime creates."""
        container = _buildah("from", "--pull-never", "--quiet", self.reference)
        try:
            root = Path(_buildah("mount", container))
            (root / "s3").mkdir(exist_ok=True)
            yield root
        finally:
            subprocess.run(["buildah", "umount", container], capture_output=True, timeout=120)
            subprocess.run(["buildah", "rm", container], capture_output=True, timeout=120)

    def run(self, command: list[str], *, env: dict[str, str], tmp: Path, s3: Path,
            timeout: float = 1800) -> subprocess.CompletedProcess:
        """Run ``command`` read-only as the image's user, with ``tmp`` at /tmp and ``s3`` at /s3."""
        # As in a pod: /tmp an emptyDir (world-writable), /s3 prepared by KFP's launcher, which runs
        # as the image's user, so what it created there belongs to that user.
        os.chmod(tmp, 0o1777)
        uid, gid = (int(x) for x in self.user.split(":"))
        for path in [s3, *s3.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)
        full_env = {**self.env, **env}
        with self.rootfs() as root:
            argv = ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "bash", "-c", _SANDBOX,
                    "sandbox", str(root), str(tmp), str(s3), self.user, "/usr/bin/env", "-i",
                    *[f"{k}={v}" for k, v in full_env.items()], "sh", "-c", 'cd "$0" && exec "$@"', self.workdir,
                    *command]
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _download(uri: str, dest: Path) -> None:
    """An artifact (one object, or a prefix of objects) to ``dest``, as KFP's launcher does."""
    if storage.exists(uri):
        storage.download(uri, dest)
        return
    for rel in storage.list_files(uri):
        storage.download(storage.join(uri, rel), dest / rel)


def _upload(path: Path, uri: str) -> None:
    if path.is_file():
        storage.upload(path, uri)
    elif path.is_dir():
        storage.upload_dir(path, uri)


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


class StepRunner:
    """Plays KFP's launcher for kfp.local's DockerRunner: every step in its image, artifacts on S3."""

    def __init__(self, pipeline_root: Path, s3_root: str, env: dict[str, str], work: Path) -> None:
        self.pipeline_root = str(pipeline_root)
        self.s3_root = s3_root.rstrip("/")
        self.env = env
        self.work = work
        self.steps: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._images: dict[str, Image] = {}

    def image(self, reference: str) -> Image:
        with self._lock:
            if reference not in self._images:
                self._images[reference] = Image(reference)
            return self._images[reference]

    def _s3(self, uri: str) -> str:
        return self.s3_root + uri[len(self.pipeline_root):] if uri.startswith(self.pipeline_root) else uri

    @staticmethod
    def _local(uri: str) -> str:
        """Where KFP mounts an s3:// artifact in the step: /s3/<bucket>/<key>."""
        return "/s3/" + uri.removeprefix("s3://")

    def run_step(self, image_ref: str, command: list[str], env: dict[str, str]) -> bool:
        """Run one step; True if it succeeded."""
        command = list(command)
        at = command.index("--executor_input") + 1
        executor_input = json.loads(command[at])
        name = executor_input["outputs"]["outputFile"].split(os.sep)[-2]
        step = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        tmp, s3 = step / "tmp", step / "s3"
        tmp.mkdir()
        s3.mkdir()
        for artifact_list in executor_input.get("inputs", {}).get("artifacts", {}).values():
            for a in artifact_list["artifacts"]:
                a["uri"] = self._s3(a["uri"])
                _download(a["uri"], s3 / a["uri"].removeprefix("s3://"))
        outputs: list[dict] = []
        for artifact_list in executor_input["outputs"].get("artifacts", {}).values():
            for a in artifact_list["artifacts"]:
                a["uri"] = self._s3(a["uri"])
                (s3 / a["uri"].removeprefix("s3://")).parent.mkdir(parents=True, exist_ok=True)
                outputs.append(a)
        output_file = executor_input["outputs"]["outputFile"]
        executor_input["outputs"]["outputFile"] = "/tmp/kfp/outputs/executor_output.json"
        params = {}
        for pname, spec in executor_input["outputs"].get("parameters", {}).items():
            params[pname] = spec["outputFile"]
            spec["outputFile"] = f"/tmp/kfp/outputs/{pname}"
        (tmp / "kfp" / "outputs").mkdir(parents=True)
        os.chmod(tmp / "kfp" / "outputs", 0o1777)
        os.chmod(tmp / "kfp", 0o1777)
        command[at] = json.dumps(executor_input)
        before = _files(s3)
        result = self.image(image_ref).run(command, env={**self.env, **env}, tmp=tmp, s3=s3)
        written = {k for k, v in _files(s3).items() if before.get(k) != v}
        stray = sorted(w for w in written if not any(
            w == o["uri"].removeprefix("s3://") or w.startswith(o["uri"].removeprefix("s3://") + "/") for o in outputs))
        ok = result.returncode == 0 and not stray
        if ok:
            for a in outputs:
                _upload(s3 / a["uri"].removeprefix("s3://"), a["uri"])
            Path(output_file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / "kfp" / "outputs" / "executor_output.json", output_file)
            for pname, local in params.items():
                produced = tmp / "kfp" / "outputs" / pname
                if produced.exists():
                    shutil.copyfile(produced, local)
        with self._lock:
            self.steps.append({"step": name, "image": image_ref, "returncode": result.returncode, "stray": stray,
                               "stdout": result.stdout[-4000:], "stderr": result.stderr[-8000:],
                               "outputs": [a["uri"] for a in outputs]})
        shutil.rmtree(step, ignore_errors=True)
        return ok


@contextlib.contextmanager
def kfp_local_in_images(pipeline_root: Path, s3_root: str, env: dict[str, str], work: Path) -> Iterator[StepRunner]:
    """kfp.local set up so that every task runs through a ``StepRunner``."""
    from kfp import local
    from kfp.local import docker_task_handler, status

    runner = StepRunner(pipeline_root, s3_root, env, work)

    def run(handler: Any) -> Any:
        ok = runner.run_step(handler.image, handler.full_command, handler.env_vars)
        return status.Status.SUCCESS if ok else status.Status.FAILURE

    original = docker_task_handler.DockerTaskHandler.run
    docker_task_handler.DockerTaskHandler.run = run
    try:
        local.init(runner=local.DockerRunner(), pipeline_root=str(pipeline_root), raise_on_error=False)
        yield runner
    finally:
        docker_task_handler.DockerTaskHandler.run = original
