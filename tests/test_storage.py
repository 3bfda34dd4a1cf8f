"""inkbooth.storage against a real SeaweedFS server (and local folders), faults injected by a proxy."""

from __future__ import annotations

import hashlib
import os

import pytest

from inkbooth import cluster, objectstore, storage
from inkbooth.storage import s3client
from tests.faultproxy import FaultProxy

CHECKSUM_ENV = ("AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION")


def set_checksums(monkeypatch, mode: str) -> None:
    """boto3's checksums, set as a cluster sets them (environment variables from the S3 Secret):
    ``default`` (unset: a CRC32 on every upload, checksums asked for on reads) or ``when_required``
    (what Google Cloud Storage's S3 API needs)."""
    for k in CHECKSUM_ENV:
        if mode == "default":
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, mode)


@pytest.fixture(params=["default", "when_required"])
def checksums(request, monkeypatch) -> str:
    set_checksums(monkeypatch, request.param)
    return request.param


@pytest.fixture(params=["local", "s3", "s3-when_required"])
def root(request, tmp_path, monkeypatch) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    set_checksums(monkeypatch, "when_required" if request.param.endswith("when_required") else "default")
    return request.getfixturevalue("bucket") + "/prefix"


def _sent(request, event_name: str) -> dict:
    """One request as the client sends it (botocore's ``before-send``)."""
    return {"op": event_name.rsplit(".", 1)[-1], "method": request.method, "url": request.url,
            "headers": {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()},
            "body": request.body}


@pytest.fixture
def wire(s3_server, checksums):
    """The requests the S3 client (of this test's environment) sends to the real server."""
    sent: list[dict] = []

    def record(request, event_name, **kw):
        sent.append(_sent(request, event_name))

    client = storage.s3_client()
    client.meta.events.register("before-send.s3", record)
    yield sent
    client.meta.events.unregister("before-send.s3", record)


class _EmptyBody:
    def stream(self, **kw):
        yield b""


@pytest.fixture
def offline(monkeypatch):
    """``offline(**env)``: the S3 client of ``env`` (endpoint, region, ...) with no server behind it;
    each request is recorded as sent and answered with an empty 200. Returns the list of requests."""
    from botocore.awsrequest import AWSResponse

    hooked = []

    def connect(**env: str | None) -> list[dict]:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
        for k in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            if v is None:
                monkeypatch.delenv(k, raising=False)
            else:
                monkeypatch.setenv(k, v)
        sent: list[dict] = []

        def answer(request, event_name, **kw):
            sent.append(_sent(request, event_name))
            return AWSResponse(request.url, 200, {}, _EmptyBody())

        client = storage.s3_client()
        client.meta.events.register("before-send.s3", answer)
        hooked.append((client, answer))
        return sent

    yield connect
    for client, answer in hooked:
        client.meta.events.unregister("before-send.s3", answer)


def test_round_trip_and_listing(root):
    storage.write_text(storage.join(root, "a.txt"), "alpha")
    storage.write_bytes(storage.join(root, "sub/b.bin"), b"\x00\x01")
    assert storage.read_text(storage.join(root, "a.txt")) == "alpha"
    assert storage.list_files(root) == ["a.txt", "sub/b.bin"]
    info = storage.stat(storage.join(root, "sub/b.bin"))
    assert info.size == 2
    storage.delete(storage.join(root, "a.txt"))
    assert not storage.exists(storage.join(root, "a.txt"))
    with pytest.raises(storage.NotFoundError, match="a.txt"):
        storage.read_bytes(storage.join(root, "a.txt"))


def test_s3_objects_carry_sha256(bucket, checksums):
    data = b"checksummed"
    storage.write_bytes(f"{bucket}/x", data)
    assert storage.stat(f"{bucket}/x").sha256 == hashlib.sha256(data).hexdigest()


def test_multipart_upload_and_verified_download(bucket, checksums, wire, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40 * 1024 * 1024))  # over the 16 MiB multipart threshold: 3 parts
    info = storage.upload(src, f"{bucket}/big.bin")
    parts = [r["headers"] for r in wire if r["op"] == "UploadPart"]
    assert len(parts) == 3
    assert all(("x-amz-checksum-crc32" in h) == (checksums == "default") for h in parts)
    assert info.sha256 == storage.sha256_file(src)
    assert storage.stat(f"{bucket}/big.bin").sha256 == info.sha256
    got = storage.download(f"{bucket}/big.bin", tmp_path / "back.bin")
    assert got.sha256 == info.sha256 and (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_checksum_mismatch_at_rest_is_detected(bucket, checksums, tmp_path):
    storage.write_bytes(f"{bucket}/doc", b"original bytes")
    recorded = storage.stat(f"{bucket}/doc").sha256
    # Someone replaces the bytes behind our back, keeping the recorded checksum.
    loc = storage.parse(f"{bucket}/doc")
    storage.s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=b"tampered bytes",
                                   Metadata={storage.SHA256_META: recorded})
    with pytest.raises(storage.ChecksumError, match="checksum mismatch"):
        storage.read_bytes(f"{bucket}/doc")
    with pytest.raises(storage.ChecksumError):
        storage.download(f"{bucket}/doc", tmp_path / "doc")
    assert not (tmp_path / "doc").exists(), "a corrupt download must not become visible"
    assert not list(tmp_path.iterdir()), "no partial file left behind"


def test_local_checksum_mismatch_against_expected(tmp_path):
    path = tmp_path / "f"
    storage.write_bytes(str(path), b"abc")
    with pytest.raises(storage.ChecksumError):
        storage.read_bytes(str(path), expected_sha256=hashlib.sha256(b"abd").hexdigest())


@pytest.fixture
def proxy(s3_server):
    with FaultProxy(s3_server.endpoint) as p, objectstore.environment({"AWS_ENDPOINT_URL_S3": p.endpoint}):
        yield p


def test_retries_throttling_5xx_and_dropped_connections(bucket, proxy):
    for kind in ("slowdown", "slowdown", "internal", "drop", "slowdown", "internal"):
        proxy.inject(kind, method="PUT", path="/retry-me")
    storage.write_bytes(f"{bucket}/retry-me", b"payload")
    assert [s for _, p, s in proxy.seen if "/retry-me" in p].count("pass") == 1
    assert len([s for _, p, s in proxy.seen if "/retry-me" in p and s != "pass"]) == 6
    proxy.inject("internal", times=2, method="GET", path="/retry-me")
    proxy.inject("drop", times=1, method="GET", path="/retry-me")
    assert storage.read_bytes(f"{bucket}/retry-me") == b"payload"


def test_corruption_on_the_wire_is_caught_and_reread(bucket, proxy):
    storage.write_bytes(f"{bucket}/wire", b"0123456789" * 100)
    proxy.inject("corrupt", times=1, method="GET", path="/wire")
    assert storage.read_bytes(f"{bucket}/wire") == b"0123456789" * 100
    proxy.inject("corrupt", times=10, method="GET", path="/wire")
    with pytest.raises(storage.ChecksumError):
        storage.read_bytes(f"{bucket}/wire")


def test_gives_up_with_a_clear_error_after_the_retry_budget(bucket, proxy):
    proxy.inject("slowdown", times=100, method="PUT", path="/never")
    with pytest.raises(storage.StorageError, match=r"writing s3://.*/never: failed after 4 attempts: SlowDown"):
        storage.write_bytes(f"{bucket}/never", b"x")
    proxy.clear()
    assert not storage.exists(f"{bucket}/never")


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/path", "a/../../b", "a\\b", "a\x00b", "new\nline", "",
                                 "a//b", "./a"])
def test_keys_cannot_escape_their_prefix(bad, tmp_path):
    with pytest.raises(storage.UnsafeKeyError):
        storage.join("s3://bucket/prefix", bad)
    with pytest.raises(storage.UnsafeKeyError):
        storage.join(str(tmp_path), bad)


def test_uri_parsing():
    loc = storage.parse("s3://bucket/some/key.txt")
    assert (loc.scheme, loc.bucket, loc.key, loc.name) == ("s3", "bucket", "some/key.txt", "key.txt")
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        storage.parse("gs://bucket/x")
    with pytest.raises(ValueError, match="needs a bucket"):
        storage.parse("s3:///x")
    assert storage.relative("s3://b/p/q/r.txt", "s3://b/p") == "q/r.txt"


def test_if_absent_refuses_overwrite(root):
    target = storage.join(root, "once")
    storage.write_text(target, "first", if_absent=True)
    with pytest.raises(storage.AlreadyExistsError):
        storage.write_text(target, "second", if_absent=True)
    assert storage.read_text(target) == "first"


def test_local_writes_leave_no_partial_files(tmp_path):
    storage.write_bytes(str(tmp_path / "a" / "f.bin"), b"1" * 1000)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.bin"]


def test_the_embedded_store_takes_many_buckets(tmp_path):
    """Each bucket takes several volumes; sized from the free disk (up to 1 GB each), the volumes ran
    out with 35 GB free and the 35th bucket's first write failed ("No writable volumes"), which broke
    the suite late in a run on a fuller disk. The store's volumes are 64 MB."""
    store = objectstore.EmbeddedS3(tmp_path / "store").start()
    try:
        with objectstore.environment(store.env()):
            for i in range(60):
                uri = f"s3://many-{i:03d}"
                storage.ensure_bucket(uri)
                storage.write_bytes(f"{uri}/object", b"x" * 1000)
                assert storage.read_bytes(f"{uri}/object") == b"x" * 1000
    finally:
        store.stop()


# ---- settings from the environment: checksums, addressing style ----------------------------------------


def test_checksum_mode_reaches_the_wire(bucket, checksums, wire, tmp_path):
    """Over plain HTTP boto3 puts its CRC32 in a header (over HTTPS: an aws-chunked trailer, next test);
    with ``when_required`` an upload carries no checksum of boto3's and a read asks for none."""
    assert storage.s3_client().meta.config.request_checksum_calculation == (
        "when_supported" if checksums == "default" else "when_required")
    storage.write_bytes(f"{bucket}/w", b"written")
    storage.write_bytes(f"{bucket}/once", b"claimed", if_absent=True)
    (tmp_path / "f").write_bytes(b"uploaded")
    storage.upload(tmp_path / "f", f"{bucket}/u")
    assert storage.read_bytes(f"{bucket}/w") == b"written"
    storage.download(f"{bucket}/u", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"uploaded"

    puts = [r for r in wire if r["op"] == "PutObject"]
    gets = [r for r in wire if r["op"] == "GetObject"]
    assert len(puts) == 3 and len(gets) == 2
    assert puts[1]["headers"]["if-none-match"] == "*"
    for r in puts:
        h = r["headers"]
        assert "aws-chunked" not in h.get("content-encoding", "") and "x-amz-trailer" not in h
        assert h["x-amz-meta-sha256"], "inkbooth's own SHA-256 goes either way"
        if checksums == "default":
            assert "x-amz-checksum-crc32" in h, h
        else:
            assert not [k for k in h if k.startswith(("x-amz-checksum-", "x-amz-sdk-checksum"))], h
    for r in gets:
        assert (r["headers"].get("x-amz-checksum-mode") == "ENABLED") == (checksums == "default")


def test_when_required_sends_no_aws_chunked_upload_over_https(checksums, offline):
    """What GCS refuses: boto3's default over HTTPS streams the upload ``aws-chunked`` with a CRC32 trailer."""
    sent = offline(AWS_ENDPOINT_URL_S3="https://storage.example.test", AWS_DEFAULT_REGION="auto")
    storage.write_bytes("s3://bkt/claim", b"payload", if_absent=True)
    (put,) = sent
    h = put["headers"]
    body = put["body"].read() if hasattr(put["body"], "read") else put["body"]
    assert put["url"] == "https://storage.example.test/bkt/claim" and h["if-none-match"] == "*"
    if checksums == "default":
        assert "aws-chunked" in h["content-encoding"] and h["x-amz-trailer"] == "x-amz-checksum-crc32"
        assert b"x-amz-checksum-crc32:" in body
    else:
        assert "content-encoding" not in h and "x-amz-trailer" not in h
        assert body == b"payload"


@pytest.mark.parametrize(("style", "endpoint", "url"), [
    (None, "http://store.example.test:9000", "http://store.example.test:9000/bkt/some/key"),
    ("path", "http://store.example.test:9000", "http://store.example.test:9000/bkt/some/key"),
    ("virtual", "http://store.example.test:9000", "http://bkt.store.example.test:9000/some/key"),
    (" Path ", None, "https://s3.eu-west-1.amazonaws.com/bkt/some/key"),
    (None, None, "https://bkt.s3.eu-west-1.amazonaws.com/some/key"),
    ("auto", None, "https://bkt.s3.eu-west-1.amazonaws.com/some/key"),
])
def test_addressing_style_from_the_environment(style, endpoint, url, offline):
    sent = offline(INKBOOTH_S3_ADDRESSING_STYLE=style, AWS_ENDPOINT_URL_S3=endpoint, AWS_DEFAULT_REGION="eu-west-1")
    storage.write_bytes("s3://bkt/some/key", b"x")
    assert [r["url"] for r in sent] == [url]


def test_path_style_against_the_real_store(bucket, monkeypatch):
    monkeypatch.setenv(s3client.ADDRESSING_ENV, "path")
    storage.write_bytes(f"{bucket}/p", b"path style")
    assert storage.read_bytes(f"{bucket}/p") == b"path style"


def test_bad_settings_fail_naming_the_variable(offline, monkeypatch):
    offline(AWS_ENDPOINT_URL_S3="https://storage.example.test")
    monkeypatch.setenv(s3client.ADDRESSING_ENV, "sideways")
    with pytest.raises(ValueError, match=r"INKBOOTH_S3_ADDRESSING_STYLE='sideways': expected one of path, virtual"):
        storage.s3_client()
    with pytest.raises(ValueError, match="INKBOOTH_S3_ADDRESSING_STYLE"):
        storage.write_bytes("s3://bkt/k", b"x")
    monkeypatch.delenv(s3client.ADDRESSING_ENV)
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "sometimes")
    with pytest.raises(ValueError, match="AWS_REQUEST_CHECKSUM_CALCULATION.*sometimes"):
        storage.s3_client()


def test_the_s3_secret_can_carry_every_setting():
    """A cluster's steps see only the Secret's keys: each variable the client reads can come from it."""
    assert set(CHECKSUM_ENV) | {s3client.ADDRESSING_ENV} <= set(cluster.S3_OPTIONAL)
    assert set(cluster.S3_KEYS + cluster.S3_OPTIONAL) <= set(s3client._ENV_KEYS), "the client cache follows them"
