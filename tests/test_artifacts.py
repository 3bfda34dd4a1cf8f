"""Manifests, atomic publish and the model registry, on local folders and on S3."""

from __future__ import annotations

import json
import threading

import pytest

from inkbooth import artifacts, objectstore, storage
from tests.faultproxy import FaultProxy


def make_dir(path, files: dict[str, bytes]):
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("bucket")


def test_publish_writes_a_complete_manifest(root, tmp_path):
    src = make_dir(tmp_path / "src", {"w.bin": b"weights", "cfg/config.json": b"{}"})
    m = artifacts.publish(src, storage.join(root, "art"), kind="model", inputs={"data": "abc"},
                          config={"lr": 0.1}, metrics={"loss": 0.5})
    back = artifacts.read_manifest(storage.join(root, "art"))
    assert back.content_hash == m.content_hash == artifacts.content_hash(artifacts.scan_dir(src))
    assert {f.path for f in back.files} == {"w.bin", "cfg/config.json"}
    assert back.inputs == {"data": "abc"} and back.config == {"lr": 0.1} and back.metrics == {"loss": 0.5}
    assert back.inkbooth_version and back.created_at
    fetched = artifacts.fetch(storage.join(root, "art"), tmp_path / "fetched")
    assert (fetched / "cfg" / "config.json").read_bytes() == b"{}"


def test_fetch_detects_a_tampered_file(tmp_path):
    src = make_dir(tmp_path / "src", {"w.bin": b"weights"})
    artifacts.publish(src, str(tmp_path / "art"), kind="model")
    (tmp_path / "art" / "w.bin").write_bytes(b"evil")
    with pytest.raises(storage.ChecksumError):
        artifacts.fetch(str(tmp_path / "art"))


def test_half_published_artifact_is_invisible(bucket, s3_server, tmp_path):
    src = make_dir(tmp_path / "src", {"a.bin": b"a" * 100, "b.bin": b"b" * 100, "c.bin": b"c" * 100})
    uri = f"{bucket}/half"
    with FaultProxy(s3_server.endpoint) as proxy, objectstore.environment({"AWS_ENDPOINT_URL_S3": proxy.endpoint}):
        proxy.inject("drop", times=100, method="PUT", path="/half/c.bin")  # the publish dies on its third file
        with pytest.raises(storage.StorageError):
            artifacts.publish(src, uri, kind="model")
    assert storage.exists(f"{uri}/a.bin"), "the first files did reach the store"
    assert not artifacts.is_published(uri)
    with pytest.raises(artifacts.NotPublishedError):
        artifacts.read_manifest(uri)
    with pytest.raises(artifacts.NotPublishedError):
        artifacts.fetch(uri)


def test_local_publish_is_all_or_nothing(tmp_path, monkeypatch):
    src = make_dir(tmp_path / "src", {"a.bin": b"a", "b.bin": b"b"})
    real = artifacts.shutil.copytree

    def failing_copytree(*a, **kw):
        real(*a, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts.shutil, "copytree", failing_copytree)
    with pytest.raises(storage.StorageError, match="no space left"):
        artifacts.publish(src, str(tmp_path / "out" / "art"), kind="model")
    assert not (tmp_path / "out" / "art").exists()
    assert list((tmp_path / "out").iterdir()) == [], "the temporary folder is cleaned up"


def test_registry_versions_aliases_and_no_overwrite(root, tmp_path):
    reg = artifacts.Registry(storage.join(root, "models"))
    v1_dir = make_dir(tmp_path / "v1", {"w.bin": b"one"})
    v2_dir = make_dir(tmp_path / "v2", {"w.bin": b"two"})
    assert reg.register("ocr", v1_dir, kind="model")[0] == "v1"
    assert reg.register("ocr", v1_dir, kind="model")[0] == "v1", "same content, same version"
    assert reg.register("ocr", v2_dir, kind="model", lineage={"parent": "v1"})[0] == "v2"
    assert reg.versions("ocr") == ["v1", "v2"]
    assert reg.resolve("ocr", "latest") == "v2"
    assert reg.manifest("ocr", "v1").files[0].sha256 != reg.manifest("ocr").files[0].sha256
    reg.set_alias("ocr", "prod", "v1")
    assert reg.resolve("ocr", "prod") == "v1"
    with pytest.raises(storage.AlreadyExistsError):
        artifacts.publish(v2_dir, reg.uri("ocr", "v1"), kind="model")
    assert artifacts.read_manifest(reg.uri("ocr", "v1")).content_hash == artifacts.content_hash(artifacts.scan_dir(v1_dir))
    with pytest.raises(artifacts.NotPublishedError):
        reg.resolve("ocr", "v9")
    with pytest.raises(ValueError, match="model name"):
        reg.register("../escape", v1_dir, kind="model")


def test_concurrent_registrations_get_distinct_versions(bucket, tmp_path):
    reg = artifacts.Registry(f"{bucket}/models")
    dirs = [make_dir(tmp_path / f"d{i}", {"w.bin": f"weights {i}".encode()}) for i in range(4)]
    got: list[str] = []
    errors: list[BaseException] = []

    def work(d):
        try:
            got.append(reg.register("race", d, kind="model", alias=None)[0])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == sorted(set(got)) and len(got) == 4
    for v in reg.versions("race"):
        m = reg.manifest("race", v)
        data = storage.read_bytes(storage.join(reg.uri("race", v), "w.bin"), expected_sha256=m.files[0].sha256)
        assert data.startswith(b"weights")
    assert json.loads(artifacts.read_manifest(reg.uri("race", "v1")).to_json())["version"] == "v1"
