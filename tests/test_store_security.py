"""The embedded store opens no door beside its S3 keys (issue 18, items 3, 4 and 9b).

Item 4: every TCP port the store's server listens on is found (``/proc/net/tcp`` matched to the
server's socket inodes) and tried without credentials: plain HTTP (object paths through the filer and
WebDAV, listings, a volume's file id, master's ``/dir/assign`` and ``/dir/lookup``, writes and
deletes), HTTP/2 and gRPC in the clear (an assignment from the master, a filer listing, every needle
of a volume, the S3 gateway's identity cache), and TLS without a client certificate; the unix sockets
weed's parts talk over too. Only the S3 port may answer, and only with a refusal; S3 with the keys
still works, and nothing the anonymous requests tried changed the bucket.

Items 3 and 9b: ``store start --data`` leaves the modes of an existing folder alone; a second start on
a running store's folder is refused before anything is written; a restart that dies is one more death.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from inkbooth import objectstore, storage

# ---- the ports a process tree listens on -----------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def listening_ports(pid: int) -> dict[int, str]:
    """Every TCP port a process tree listens on, with its address (hex, as /proc writes it)."""
    inodes = set()
    for p in _tree(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                address, port = f[1].rsplit(":", 1)
                ports[int(port, 16)] = address
    return ports


# ---- anonymous clients --------------------------------------------------------------------------------


def _http(port: int, method: str, path: str, body: bytes | None = None,
          headers: dict | None = None) -> tuple[int, bytes] | str:
    """(status, body) of one plain HTTP request, or why there was no answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(1 << 20)
    except (OSError, http.client.HTTPException) as e:
        return f"no answer ({type(e).__name__})"
    finally:
        conn.close()


def _tls_without_client_cert(port: int) -> bytes | str:
    """What an HTTP/1.1 request over TLS without a client certificate gets (bytes: an answer)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = s.recv(4096)
            return data or "closed"
    except (OSError, ssl.SSLError) as e:
        return f"no answer ({type(e).__name__})"


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def listening_unix_sockets(pid: int) -> list[str]:
    """The paths of the unix sockets a process listens on (weed's parts talk over them)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = {t[8:-1] for fd in fd_dir.iterdir() if (t := os.readlink(fd)).startswith("socket:[")}
    paths = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 8 and f[6] in inodes and int(f[3], 16) & 0x10000:  # __SO_ACCEPTCON: listening
            paths.add(f[7])
    return sorted(paths)


def _http_unix(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(request)
        try:
            return s.recv(4096)
        except OSError:
            return b""


def _h2_in_the_clear(port: int) -> bool:
    """Whether the port speaks HTTP/2 (so gRPC) in the clear: it answers the preface with SETTINGS."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = s.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
            return head[3] == 0x04  # a SETTINGS frame
    except OSError:
        return False


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _grpc_calls(bucket: str, volume_id: int) -> list[tuple[str, str, bytes]]:
    """(kind, method, request) of calls that read or write the store's data, without any credentials."""
    return [
        ("unary", "/master_pb.Seaweed/Assign", b"\x08\x01"),                        # count: 1
        ("stream", "/filer_pb.SeaweedFiler/ListEntries", _field(1, f"/buckets/{bucket}".encode())),
        ("stream", "/volume_server_pb.VolumeServer/ReadAllNeedles", _field(1, _varint(volume_id))),
        ("unary", "/messaging_pb.SeaweedS3IamCache/ListPolicies", b""),
    ]


def _grpc_answers(port: int | str, calls: list, credentials=None) -> list[str]:
    """The calls that got through to a server on ``port`` (or a gRPC target such as ``unix:PATH``):
    any status but UNAVAILABLE means the server read the request. With what they got."""
    import grpc

    target = port if isinstance(port, str) else f"127.0.0.1:{port}"
    options = [("grpc.ssl_target_name_override", "localhost")]
    channel = grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target)
    answered = []
    with channel:
        for kind, method, request in calls:
            try:
                if kind == "unary":
                    reply = channel.unary_unary(method, _raw, _raw)(request, timeout=5)
                    answered.append(f"{method}: OK {reply[:60]!r}")
                else:
                    replies = list(channel.unary_stream(method, _raw, _raw)(request, timeout=5))
                    answered.append(f"{method}: OK, {len(replies)} replies, {sum(map(len, replies))} bytes")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    answered.append(f"{method}: {e.code().name} {str(e.details())[:60]}")
    return answered


def _raw(message: bytes) -> bytes:
    return message


def _fid_of(store: objectstore.EmbeddedS3, payload: bytes) -> tuple[int, str]:
    """The volume id and file id of the needle that holds ``payload``, found in the volume files (what
    an anonymous client would learn from a filer listing or guess)."""
    for dat in (store.data_dir / "data").rglob("*.dat"):
        data = dat.read_bytes()
        at = data.find(payload[:256])
        if at < 20:
            continue
        header = at - 20  # cookie (4), needle id (8), size (4), data size (4): needle version 3
        cookie, needle = data[header:header + 4], data[header + 4:header + 12]
        volume = int(dat.stem.rsplit("_", 1)[-1])
        return volume, f"{volume},{int.from_bytes(needle, 'big'):x}{cookie.hex()}"
    raise AssertionError("the payload is in no volume file")


# ---- item 4 ---------------------------------------------------------------------------------------------


def test_every_port_of_the_embedded_store_refuses_anonymous_clients(tmp_path):
    store = objectstore.EmbeddedS3(tmp_path / "store").start()
    try:
        bucket, key = f"sec-{uuid.uuid4().hex[:8]}", "secret.bin"
        payload = os.urandom(64 * 1024)  # incompressible: stored as it is
        with objectstore.environment(store.env()):
            storage.ensure_bucket(f"s3://{bucket}")
            storage.write_bytes(f"s3://{bucket}/{key}", payload)
        volume, fid = _fid_of(store, payload)
        calls = _grpc_calls(bucket, volume)
        deadline = time.monotonic() + 30  # the admin server starts after S3 answers
        while not set(store.ports.values()) <= set(ports := listening_ports(store.proc.pid)):
            assert time.monotonic() < deadline, f"never listened: {set(store.ports.values()) - set(ports)}"
            time.sleep(0.2)
        s3_port = store.ports["s3.port"]
        assert s3_port in ports, ports
        assert all(address in ("0100007F", "00000000000000000000000001000000") for address in ports.values()), \
            f"every listener on 127.0.0.1: {ports}"
        names = {port: flag for flag, port in store.ports.items()}
        names.update({port: "(not chosen by inkbooth)" for port in ports if port not in names})

        reads = [("GET", f"/buckets/{bucket}/{key}"), ("GET", f"/{bucket}/{key}"), ("GET", f"/{fid}"),
                 ("GET", f"/{fid.replace(',', '/')}"), ("HEAD", f"/{fid}"), ("GET", f"/dir/lookup?fileId={fid}"),
                 ("GET", "/dir/assign"), ("POST", "/dir/assign"), ("GET", "/vol/grow?count=1")]
        listings = [("GET", "/"), ("GET", "/buckets/"), ("GET", f"/buckets/{bucket}/"), ("GET", f"/{bucket}/"),
                    ("GET", f"/buckets/{bucket}/?pretty=y"), ("PROPFIND", "/"), ("PROPFIND", f"/buckets/{bucket}/"),
                    ("GET", "/dir/status"), ("GET", "/col/list"), ("GET", "/vol/status"), ("GET", "/cluster/status"),
                    ("GET", "/status"), ("GET", "/ui/index.html"), ("GET", "/metrics"), ("GET", "/stats/disk"),
                    ("GET", "/debug/pprof/")]
        writes = [("PUT", f"/buckets/{bucket}/anon.bin"), ("POST", f"/buckets/{bucket}/anon.bin"),
                  ("PUT", f"/{bucket}/anon.bin"), ("MKCOL", f"/buckets/{bucket}/anon-dir"),
                  ("POST", f"/{fid}"), ("PUT", f"/{fid}"), ("POST", "/submit")]
        deletes = [("DELETE", f"/{fid}"), ("DELETE", f"/buckets/{bucket}/{key}"), ("DELETE", f"/{bucket}/{key}")]
        answered: list[str] = []

        def try_http(probes: list[tuple[str, str]]) -> None:
            for port in sorted(ports):
                for method, path in probes:
                    body = b"anonymous" if method in ("PUT", "POST") else None
                    got = _http(port, method, path, body, {"Depth": "1"} if method == "PROPFIND" else None)
                    if isinstance(got, str):
                        continue
                    status, text = got
                    # what the reply shows that the request did not name (an error may echo its path)
                    leaks = [w for w in (payload[:32], key.encode(), bucket.encode(), fid.encode())
                             if w in text and w not in path.encode()]
                    if (200 <= status < 300 and (method, path) not in listings) or leaks:
                        answered.append(f"{port} ({names[port]}): {method} {path} -> {status} {text[:80]!r}"
                                        + (f" (shows {leaks})" if leaks else ""))

        try_http(reads + listings)  # every port read before any is written to
        for port in sorted(ports):
            where = f"{port} ({names[port]})"
            if port != s3_port:
                tls = _tls_without_client_cert(port)
                if isinstance(tls, bytes):
                    answered.append(f"{where}: TLS without a client certificate -> {tls[:80]!r}")
                if _h2_in_the_clear(port):
                    answered.append(f"{where}: speaks HTTP/2 (gRPC) in the clear")
            try:
                import grpc
            except ImportError:  # the raw HTTP/2 probe above still runs
                continue
            answered += [f"{where}: gRPC in the clear: {a}" for a in _grpc_answers(port, calls)]
            ca = store.data_dir / "security" / "ca.crt"
            if ca.exists():  # the server's own CA, so only the missing client certificate stops the call
                creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
                answered += [f"{where}: gRPC over TLS without a client certificate: {a}"
                             for a in _grpc_answers(port, calls, creds)]
        # the unix sockets weed's parts talk over: only its user may connect, and they want the same
        for path in listening_unix_sockets(store.proc.pid):
            if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
                answered.append(f"{path}: others may connect (mode {stat.S_IMODE(os.stat(path).st_mode):o})")
            for method, probe in reads + listings:
                reply = _http_unix(path, f"{method} {probe} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if reply[9:10] == b"2" and (method, probe) not in listings or payload[:32] in reply \
                        or (key.encode() in reply and key not in probe):
                    answered.append(f"{path}: {method} {probe} -> {reply[:80]!r}")
            try:
                import grpc  # noqa: F401 - only whether it is there
            except ImportError:
                continue
            answered += [f"{path}: gRPC in the clear: {a}" for a in _grpc_answers(f"unix:{path}", calls)]
        try_http(writes)
        try_http(deletes)
        # S3 without keys is refused; with them it works, and nothing above changed the bucket.
        anon = _http(s3_port, "GET", f"/{bucket}/{key}")
        assert not isinstance(anon, str) and anon[0] == 403, anon
        with objectstore.environment(store.env()):
            listed = storage.list_files(f"s3://{bucket}")
            intact = key in listed and storage.read_bytes(f"s3://{bucket}/{key}") == payload
        if listed != [key] or not intact:
            answered.append(f"after the anonymous requests, S3 with the keys lists {listed}; "
                            f"the object is {'intact' if intact else 'gone or changed'}")
        assert answered == [], "anonymous requests answered:\n" + "\n".join(answered)
    finally:
        store.stop()


# ---- `inkbooth store start` as a user runs it -------------------------------------------------------------


def _store_start(data: Path, tmp_path: Path, timeout: float = 90) -> tuple[subprocess.Popen, str | None, Path]:
    """``inkbooth store start --data DATA`` in the background: the process, the endpoint it printed
    (None if it exited first) and its stderr file. Output goes to files read with a deadline, so a
    server that never prints cannot hang the test."""
    out, err = tmp_path / f"out-{time.monotonic_ns()}", tmp_path / f"err-{time.monotonic_ns()}"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "inkbooth.cli", "store", "start", "--data", str(data)],
                                stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("export AWS_ENDPOINT_URL_S3="):
                return proc, line.strip().split("=", 1)[1], err
        if proc.poll() is not None:
            return proc, None, err
        time.sleep(0.2)
    proc.kill()
    proc.wait(10)
    pytest.fail(f"store start neither printed an endpoint nor exited: {err.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode) for p in [folder, *folder.rglob("*")]}


# ---- item 3 ---------------------------------------------------------------------------------------------


def test_store_start_leaves_the_modes_of_an_existing_folder_alone(tmp_path):
    """``store start --data`` on a folder that already holds things (a project folder, a shared drive):
    before, every folder in it became 700 and every file 600, for good. Now the store changes no mode
    it did not set: it warns that the folder is readable by others, and what it creates is private."""
    data = tmp_path / "shared"
    (data / "notes" / "deep").mkdir(parents=True)
    (data / "notes" / "deep" / "run.sh").write_text("#!/bin/sh\n")
    (data / "notes" / "readme.txt").write_text("team notes\n")
    (data / "group.txt").write_text("for the group\n")
    for path, mode in [("notes/deep/run.sh", 0o775), ("notes/deep", 0o2775), ("notes/readme.txt", 0o644),
                       ("notes", 0o755), ("group.txt", 0o664), (".", 0o755)]:
        os.chmod(data / path, mode)
    before = _modes(data)

    proc, endpoint, err = _store_start(data, tmp_path)
    try:
        assert endpoint, err.read_text()[-2000:]
    finally:
        _stop(proc)
    after = _modes(data)
    assert {p: oct(m) for p, m in after.items() if p in before} == {p: oct(m) for p, m in before.items()}, \
        "modes of what was there are unchanged"
    assert f"{data}" in err.read_text() and "readable by others" in err.read_text(), err.read_text()[-2000:]
    created = {p: m for p, m in after.items() if p not in before}

    def private(path: str) -> bool:  # others can neither read it nor reach it (a folder of the store's on the way)
        parts = Path(path).parts
        return any(not created.get(str(Path(*parts[:i])), 0o777) & 0o077 for i in range(1, len(parts) + 1))

    assert created and [p for p in created if not private(p)] == [], "what the store made is private"


def test_a_new_data_folder_is_created_private(tmp_path):
    data = tmp_path / "new" / "s3"
    store = objectstore.EmbeddedS3(data)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "credentials.json").stat().st_mode) == 0o600
    del store


# ---- item 9b --------------------------------------------------------------------------------------------


def test_a_second_store_start_on_a_running_folder_is_refused_before_writing(tmp_path):
    """Before: the second start found the first one's ports taken, chose new ones and wrote them to
    ports.json, so the next start of the folder listened elsewhere and printed environments went stale."""
    data = tmp_path / "store"
    first = objectstore.EmbeddedS3(data).start()
    try:
        kept = {name: (data / name).read_bytes() for name in ("ports.json", "weed.pid", "s3.json", "credentials.json")}
        stamps = {name: (data / name).stat().st_mtime_ns for name in kept}
        starts = (data / "weed.log").read_text(errors="replace").count("Starting SeaweedFS")
        proc, endpoint, err = _store_start(data, tmp_path, timeout=60)
        try:
            assert endpoint is None, "the second store did not start"
            assert proc.wait(30) != 0
        finally:
            _stop(proc)
        message = err.read_text()
        assert "already running" in message and str(data) in message and first.endpoint in message, message
        assert {name: (data / name).read_bytes() for name in kept} == kept, "nothing rewritten"
        assert {name: (data / name).stat().st_mtime_ns for name in kept} == stamps
        assert (data / "weed.log").read_text(errors="replace").count("Starting SeaweedFS") == starts, "no second server"
        with objectstore.environment(first.env()):
            storage.ensure_bucket("s3://still-there")  # the first store still serves
    finally:
        first.stop()
    # stopped, the folder starts again, on the ports it had
    again = objectstore.EmbeddedS3(data).start()
    try:
        assert again.ports == json.loads(kept["ports.json"])
    finally:
        again.stop()


def test_the_supervisor_counts_a_restart_that_dies_as_one_more_death(tmp_path, monkeypatch):
    """weed killed, and its restart dies at start (a port taken meanwhile, a full disk): before, the
    supervisor raised at once and `store start` exited. Now that is one more death within the budget:
    it restarts again, and gives up only past the limit."""
    real = objectstore.weed_binary()
    count = tmp_path / "launches"
    wrapper = tmp_path / "weed"
    # the 2nd and 3rd launches (the first two restarts) die at start; the others run the real weed
    wrapper.write_text(f"""#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}
case $n in 2|3) echo "launch $n: dying at start" >&2; exit 7;; esac
exec {real} "$@"
""")
    wrapper.chmod(0o755)
    monkeypatch.setattr(objectstore, "weed_binary", lambda: str(wrapper))
    store = objectstore.EmbeddedS3(tmp_path / "store").start()
    stop, failure = threading.Event(), []

    def supervise():
        try:
            store.supervise(stop, restarts=3, window=300, poll=0.1)
        except Exception as e:  # noqa: BLE001 - reported below
            failure.append(e)

    watcher = threading.Thread(target=supervise, daemon=True)
    watcher.start()
    try:
        store.kill()  # death 1; launches 2 and 3 die at start (deaths 2 and 3); launch 4 runs
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not failure and int(count.read_text()) < 4:
            time.sleep(0.2)
        assert not failure, f"the supervisor gave up: {failure}"
        with objectstore.environment(store.env()):
            deadline = time.monotonic() + 60
            while True:
                try:
                    storage.ensure_bucket("s3://after-restarts")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        assert int(count.read_text()) == 4 and watcher.is_alive()

        # one more death is the 4th in the window: past the limit of 3 restarts, it gives up
        store.kill()
        watcher.join(60)
        assert failure and "4 times" in str(failure[0]), failure
    finally:
        stop.set()
        watcher.join(30)
        store.stop()


@pytest.mark.parametrize("maker", ["cryptography", "openssl"])
def test_the_store_certificate_admits_only_clients_of_its_own_ca(tmp_path, maker):
    """The certificate the internal ports demand: made by the ``cryptography`` package, or by the
    ``openssl`` command where that is not installed. Mutual TLS with it works; a client without a
    certificate, or with one of another store, is refused; the CA's key is not kept."""
    if maker == "cryptography":
        pytest.importorskip("cryptography")
        make = objectstore._new_tls_cryptography
    else:
        if not shutil.which("openssl"):
            pytest.skip("no openssl command")
        make = objectstore._new_tls_openssl
    mine, other = tmp_path / "mine", tmp_path / "other"
    for folder in (mine, other):
        folder.mkdir(mode=0o700)
        make(folder)
    assert sorted(os.listdir(mine)) == ["ca.crt", "store.crt", "store.key"], "no CA key kept"
    assert {name: oct(stat.S_IMODE((mine / name).stat().st_mode)) for name in os.listdir(mine)} == \
        dict.fromkeys(["ca.crt", "store.crt", "store.key"], "0o600")

    def handshake(client_folder: Path | None) -> str:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(mine / "store.crt", mine / "store.key")
        server.load_verify_locations(mine / "ca.crt")
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(mine / "ca.crt")  # the client checks the server and its address
        if client_folder is not None:
            client.load_cert_chain(client_folder / "store.crt", client_folder / "store.key")
        a, b = socket.socketpair()
        result: dict[str, str] = {}

        def serve():
            try:
                with server.wrap_socket(a, server_side=True) as s:
                    s.sendall(s.recv(5).upper())
                    result["server"] = "ok"
            except (OSError, ssl.SSLError) as e:
                result["server"] = type(e).__name__
                a.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with client.wrap_socket(b, server_hostname="127.0.0.1") as c:
                c.settimeout(10)
                c.sendall(b"hello")
                reply = c.recv(5)
        except (OSError, ssl.SSLError) as e:
            reply = type(e).__name__.encode()
        thread.join(10)
        return reply.decode()

    assert handshake(mine) == "HELLO"
    assert handshake(None) != "HELLO"
    assert handshake(other) != "HELLO"
