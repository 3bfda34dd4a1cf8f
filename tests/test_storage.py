"""inkbooth.storage against a real SeaweedFS server (and local folders), faults injected by a proxy."""

from __future__ import annotations

import hashlib
import os

import pytest

from inkbooth import objectstore, storage
from tests.faultproxy import FaultProxy


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("bucket") + "/prefix"


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


def test_s3_objects_carry_sha256(bucket):
    data = b"checksummed"
    storage.write_bytes(f"{bucket}/x", data)
    assert storage.stat(f"{bucket}/x").sha256 == hashlib.sha256(data).hexdigest()


def test_multipart_upload_and_verified_download(bucket, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40 * 1024 * 1024))  # over the 16 MiB multipart threshold: 3 parts
    info = storage.upload(src, f"{bucket}/big.bin")
    assert info.sha256 == storage.sha256_file(src)
    assert storage.stat(f"{bucket}/big.bin").sha256 == info.sha256
    got = storage.download(f"{bucket}/big.bin", tmp_path / "back.bin")
    assert got.sha256 == info.sha256 and (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_checksum_mismatch_at_rest_is_detected(bucket, tmp_path):
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
