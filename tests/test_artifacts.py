"""Manifests, atomic publish and the model registry, on local folders and on S3."""

from __future__ import annotations

import json
import threading
import time

import pytest

from inkbooth import artifacts, objectstore, storage
from inkbooth.artifacts import publishing
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
    real = publishing.shutil.copytree

    def failing_copytree(*a, **kw):
        real(*a, **kw)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publishing.shutil, "copytree", failing_copytree)
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


def test_registrations_stay_distinct_on_a_store_that_ignores_if_none_match(bucket, tmp_path, monkeypatch):
    """Some S3-compatibles drop ``If-None-Match: *`` and overwrite silently: both racers' claims of v1
    "succeed". Each also leaves a token of its own in the version's folder and keeps the number only
    where the folder holds no one else's, so at most one of them publishes there."""
    client = storage.s3_client()
    real_put = client.put_object
    both_claim_v1 = threading.Barrier(2, timeout=30)
    ignored: list[str] = []

    def put_ignoring_if_none_match(**kw):
        if kw.pop("IfNoneMatch", None):
            ignored.append(kw["Key"])
        if kw["Key"].endswith(f"/v1/{artifacts.CLAIM}"):
            both_claim_v1.wait()  # neither claims v1 before both have chosen it
        return real_put(**kw)

    monkeypatch.setattr(client, "put_object", put_ignoring_if_none_match)
    reg = artifacts.Registry(f"{bucket}/models")
    dirs = [make_dir(tmp_path / f"d{i}", {"w.bin": f"weights {i}".encode()}) for i in range(2)]
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            got[reg.register("race", dirs[i], kind="model", alias=None)[0]] = f"weights {i}"
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ignored.count(f"models/race/v1/{artifacts.CLAIM}") == 2, "both conditional claims of v1 went through"
    assert len(got) == 2, f"two registrations, two versions: {got}"
    assert reg.versions("race") == sorted(got, key=lambda v: int(v[1:]))
    for v, text in got.items():
        m = reg.manifest("race", v)
        assert storage.read_text(storage.join(reg.uri("race", v), "w.bin")) == text
        assert [f.path for f in m.files] == ["w.bin"]


# ---- republishing: a new version beside the old one, the pointer moved last ------------------------


def test_republishing_writes_a_new_version_and_moves_the_pointer(root, tmp_path):
    uri = storage.join(root, "results")
    v1 = artifacts.publish(make_dir(tmp_path / "v1", {"a.txt": b"one", "old-only.txt": b"stale"}), uri,
                           kind="r", overwrite=True)
    v2 = artifacts.publish(make_dir(tmp_path / "v2", {"a.txt": b"two"}), uri, kind="r", overwrite=True)
    assert v1.root != v2.root and v2.root.startswith(artifacts.VERSIONS + "/")
    assert artifacts.read_manifest(uri).root == v2.root
    assert artifacts.read_text(uri, "a.txt") == "two"
    assert [f.path for f in artifacts.read_manifest(uri).files] == ["a.txt"], "no stale file of v1 is sealed"
    with pytest.raises(storage.NotFoundError):
        artifacts.read_bytes(uri, "old-only.txt")
    fetched = artifacts.fetch(uri, tmp_path / "fetched")
    assert sorted(p.name for p in fetched.iterdir()) == ["a.txt", "manifest.json"]
    # The previous version stays whole for readers that started on it.
    assert storage.read_bytes(v1.location(uri, "a.txt"), expected_sha256=v1.file("a.txt").sha256) == b"one"
    assert artifacts.file_uri(uri, "a.txt") == v2.location(uri, "a.txt")


def test_old_versions_are_collected_but_current_and_previous_kept(root, tmp_path):
    uri = storage.join(root, "samples")
    made = [artifacts.publish(make_dir(tmp_path / f"v{i}", {"x.bin": f"version {i}".encode()}), uri, kind="s",
                              overwrite=True, gc_grace=0) for i in range(4)]
    roots = {rel.split("/")[1] for rel in storage.list_files(uri) if rel.startswith(artifacts.VERSIONS + "/")}
    assert roots == {m.root.split("/")[1] for m in made[-2:]}, "current and previous only"
    young = artifacts.publish(make_dir(tmp_path / "v5", {"x.bin": b"five"}), uri, kind="s", overwrite=True)
    roots = {rel.split("/")[1] for rel in storage.list_files(uri) if rel.startswith(artifacts.VERSIONS + "/")}
    assert len(roots) == 3 and young.root.split("/")[1] in roots, "within the grace period nothing young goes"


def test_republishing_over_an_in_place_artifact_collects_its_files_later(tmp_path):
    uri = str(tmp_path / "art")
    artifacts.publish(make_dir(tmp_path / "v0", {"w.bin": b"zero"}), uri, kind="m")  # write-once, in place
    (tmp_path / "art" / "mine.txt").write_text("not part of any version")
    artifacts.publish(make_dir(tmp_path / "v1", {"w.bin": b"one"}), uri, kind="m", overwrite=True, gc_grace=0)
    assert (tmp_path / "art" / "w.bin").read_bytes() == b"zero", "the in-place version is the previous one: kept"
    artifacts.publish(make_dir(tmp_path / "v2", {"w.bin": b"two"}), uri, kind="m", overwrite=True, gc_grace=0)
    assert not (tmp_path / "art" / "w.bin").exists()
    assert (tmp_path / "art" / "mine.txt").exists(), "only files the old manifest listed are deleted"
    assert artifacts.read_text(uri, "w.bin") == "two"


def test_a_publish_that_dies_leaves_the_previous_version_readable(bucket, s3_server, tmp_path):
    uri = f"{bucket}/results"
    artifacts.publish(make_dir(tmp_path / "v1", {"a.bin": b"a" * 100, "b.bin": b"b" * 100}), uri, kind="r",
                      overwrite=True)
    new = make_dir(tmp_path / "v2", {"a.bin": b"A" * 100, "b.bin": b"B" * 100})
    with FaultProxy(s3_server.endpoint) as proxy, objectstore.environment({"AWS_ENDPOINT_URL_S3": proxy.endpoint}):
        proxy.inject("drop", times=100, method="PUT", path="/b.bin")  # dies on its second file, like a kill
        with pytest.raises(storage.StorageError):
            artifacts.publish(new, uri, kind="r", overwrite=True)
    assert artifacts.read_text(uri, "a.bin") == "a" * 100 and artifacts.read_text(uri, "b.bin") == "b" * 100
    assert (artifacts.fetch(uri, tmp_path / "got") / "a.bin").read_bytes() == b"a" * 100


def _version(tmp_path, i: int):
    """A 3-file version whose every file starts with its tag ``i:``."""
    return make_dir(tmp_path / f"v{i}", {f"f{j}.bin": (f"{i}:{j}:" * 4000).encode() for j in range(3)})


def _tags(folder) -> set[str]:
    return {(folder / f"f{j}.bin").read_bytes().split(b":")[0].decode() for j in range(3)}


def test_a_reader_between_the_steps_of_a_publish_sees_the_old_version_whole(root, tmp_path, monkeypatch):
    """The publish is held after its files are written and before its pointer moves (the overlap is
    forced, not hoped for); a reader then gets the old version, every file of it, and after the
    pointer moves the new one."""
    uri = storage.join(root, "hot")
    artifacts.publish(_version(tmp_path, 0), uri, kind="r", overwrite=True, gc_grace=0)
    written, go = threading.Event(), threading.Event()
    staged: list = []

    def held(real):
        def step(*args, **kwargs):
            real(*args, **kwargs)
            staged.append(args)
            written.set()
            assert go.wait(60)
        return step

    monkeypatch.setattr(publishing, "_upload_files", held(publishing._upload_files))  # S3
    monkeypatch.setattr(publishing, "_copy_tree", held(publishing._copy_tree))  # local
    errors: list[BaseException] = []

    def publish():
        try:
            artifacts.publish(_version(tmp_path, 1), uri, kind="r", overwrite=True, gc_grace=0)
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        assert written.wait(60), "the publish never wrote its files"
        # The new version's files are on the store now, the pointer not moved yet.
        (args,) = staged
        manifest = args[2]
        new_files = (storage.list_files(storage.join(uri, manifest.root)) if storage.parse(uri).is_s3
                     else [p.name for p in args[1].iterdir()])
        assert {"f0.bin", "f1.bin", "f2.bin"} <= set(new_files)
        assert _tags(artifacts.fetch(uri, tmp_path / "during")) == {"0"}
        assert artifacts.read_text(uri, "f2.bin").startswith("0:")
        assert publisher.is_alive(), "the reads happened while the publish was between its steps"
    finally:
        go.set()
        publisher.join(60)
    assert errors == []
    assert _tags(artifacts.fetch(uri, tmp_path / "after")) == {"1"}


def test_a_reader_whose_version_is_collected_under_it_reads_the_new_one_whole(root, tmp_path, monkeypatch):
    """The reader has read the pointer and is about to fetch the files; it is held there while two
    republishes move the pointer on and collect its version (gc_grace=0). Its first file is gone
    when it goes on: it must follow the pointer and return one whole version, the newest."""
    uri = storage.join(root, "hot")
    artifacts.publish(_version(tmp_path, 0), uri, kind="r", overwrite=True, gc_grace=0)
    old_root = artifacts.read_manifest(uri).root
    about_to_read, collected = threading.Event(), threading.Event()
    attempts: list[tuple[str, str]] = []  # (file, what happened) for each file the reader fetched
    real_download = storage.download

    def download(source, *args, **kwargs):
        if threading.current_thread() is reader:
            if not attempts:
                about_to_read.set()
                assert collected.wait(60)
            try:
                got = real_download(source, *args, **kwargs)
            except storage.StorageError as e:
                attempts.append((source, type(e).__name__))
                raise
            attempts.append((source, "ok"))
            return got
        return real_download(source, *args, **kwargs)

    monkeypatch.setattr(storage, "download", download)
    result: dict = {}

    def read():
        try:
            result["folder"] = artifacts.fetch(uri, tmp_path / "read")
        except BaseException as e:  # noqa: BLE001 - asserted below
            result["error"] = e

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert about_to_read.wait(60), "the reader never started fetching"
        for i in (1, 2):
            artifacts.publish(_version(tmp_path, i), uri, kind="r", overwrite=True, gc_grace=0)
        assert not [f for f in storage.list_files(uri) if f.startswith(old_root + "/")], \
            "the reader's version was collected while it was held"
    finally:
        collected.set()
        reader.join(60)
    assert "error" not in result, result.get("error")
    assert _tags(result["folder"]) == {"2"}
    assert attempts[0][0].startswith(storage.join(uri, old_root)) and attempts[0][1] == "NotFoundError", \
        "its first read met the collected version"
    assert [what for _, what in attempts[1:]] == ["ok"] * 3


def test_a_slow_publish_is_not_collected_by_a_concurrent_one(root, tmp_path, monkeypatch):
    """A republish that takes longer than the grace while other publishes of the same URI collect.
    Was: its version was collected under it (its age taken from when it started), and it moved the
    pointer to deleted files and returned (S3), or failed (locally). Now a version being written is
    never collected and an old one is old by when it was superseded: every pointer names a whole version."""
    grace = 1.0
    monkeypatch.setattr(publishing, "GC_GRACE_SECONDS", grace)
    uri = storage.join(root, "slow")
    artifacts.publish(make_dir(tmp_path / "v0", {"a.bin": b"zero"}), uri, kind="r", overwrite=True)
    uploaded, others_done = threading.Event(), threading.Event()
    slow_thread: list[threading.Thread] = []

    def stall():  # the slow publish: every file stored, then a long pause before the pointer moves
        if threading.current_thread() is slow_thread[0]:
            uploaded.set()
            assert others_done.wait(60)

    real_upload, real_copy = publishing._upload_files, publishing._copy_tree
    monkeypatch.setattr(publishing, "_upload_files", lambda *a, **kw: (real_upload(*a, **kw), stall()))
    monkeypatch.setattr(publishing, "_copy_tree", lambda *a, **kw: (real_copy(*a, **kw), stall()))
    errors: list[BaseException] = []
    got: dict[str, artifacts.Manifest] = {}

    def slow():
        try:
            got["slow"] = artifacts.publish(make_dir(tmp_path / "slow", {"a.bin": b"S" * 1000, "b.bin": b"s" * 1000}),
                                            uri, kind="r", overwrite=True)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    slow_thread.append(threading.Thread(target=slow))
    slow_thread[0].start()
    try:
        assert uploaded.wait(60)
        began, fast = time.time(), []
        # Other publishes of the same URI, each collecting, until the slow version is well past the grace.
        while time.time() - began < 3 * grace or len(fast) < 3:
            fast.append(artifacts.publish(make_dir(tmp_path / f"f{len(fast)}", {"a.bin": f"fast {len(fast)}".encode()}),
                                          uri, kind="r", overwrite=True))
            time.sleep(grace / 3)
    finally:
        others_done.set()
        slow_thread[0].join(60)
    assert errors == [], f"the slow publish failed: {errors}"
    pointer = artifacts.read_manifest(uri)
    assert pointer.root == got["slow"].root, "the slow publish moved the pointer last"
    for f in pointer.files:  # every file the pointer lists is there, whole
        assert artifacts.read_bytes(uri, f.path) == (b"S" if f.path == "a.bin" else b"s") * 1000
    previous = fast[-1]  # the version the slow one replaced stays whole for its readers
    assert storage.read_bytes(previous.location(uri, "a.bin"), expected_sha256=previous.file("a.bin").sha256)
    # And the next publish collects what is old by now without touching the current or previous version.
    time.sleep(grace)
    last = artifacts.publish(make_dir(tmp_path / "last", {"a.bin": b"last"}), uri, kind="r", overwrite=True)
    roots = {rel.split("/")[1] for rel in storage.list_files(uri) if rel.startswith(artifacts.VERSIONS + "/")}
    assert {last.root.split("/")[1], got["slow"].root.split("/")[1]} <= roots
    assert fast[0].root.split("/")[1] not in roots, "a version superseded longer than the grace ago is collected"
    assert (artifacts.fetch(uri, tmp_path / "whole") / "a.bin").read_bytes() == b"last"


def test_a_publish_whose_version_vanished_before_its_pointer_fails(root, tmp_path, monkeypatch):
    """Its version deleted (collected by a process that does not know it) between its files and its
    pointer: the publish raises instead of returning with a pointer that names missing files."""
    uri = storage.join(root, "vanish")
    artifacts.publish(make_dir(tmp_path / "v0", {"a.bin": b"zero"}), uri, kind="r", overwrite=True)
    real_write = storage.write_text

    def collected_first(target, text, **kw):
        if target == storage.join(uri, artifacts.MANIFEST):
            storage.delete_prefix(storage.join(uri, json.loads(text)["root"]))
        return real_write(target, text, **kw)

    monkeypatch.setattr(storage, "write_text", collected_first)
    with pytest.raises(storage.StorageError, match="collected"):
        artifacts.publish(make_dir(tmp_path / "v1", {"a.bin": b"one"}), uri, kind="r", overwrite=True)
