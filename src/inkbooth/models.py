"""Where a base model comes from: a hub id, a local folder, or an ``s3://`` prefix.

All three end as a local folder that ``from_pretrained`` reads, so the loading code after this point
is the same for a tiny test model and a real checkpoint. Pickle-based weights (``.bin``, ``.ckpt``,
``.pt``) can run code when loaded: they are refused unless ``allow_pickle`` is set, and
``trust_remote_code`` is never used.
"""

from __future__ import annotations

import re
from pathlib import Path

from inkbooth import artifacts, storage

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
SAFE_SUFFIXES = (".safetensors", ".onnx")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelSourceError(ValueError):
    """A model location that cannot be used (missing, unsafe weights, unknown form)."""


def _safetensors_name(pickle_name: str) -> str:
    """The safetensors file ``from_pretrained`` prefers to a pickle of this name (and then loads instead)."""
    stem = pickle_name.rsplit(".", 1)[0]
    if stem.startswith("pytorch_model"):  # transformers: pytorch_model[-0000x-of-0000y].bin -> model[...]
        stem = "model" + stem[len("pytorch_model"):]
    return stem + ".safetensors"


# Pickles a trainer saves beside a model to resume its run; no model loader ever opens them.
_TRAINING_STATE = re.compile(r"^(training_args\.bin|optimizer\.(bin|pt)|scheduler\.(bin|pt)|scaler\.pt|"
                             r"rng_state(_\d+)?\.pth|random_states_\d+\.pkl)$")


def check_weights(folder: Path, source: str, allow_pickle: bool = False) -> None:
    """Refuse a model folder whose weights that would be loaded are pickles (unless explicitly allowed).

    A pickle file is harmless only when the loaders would never open it: when the safetensors file
    they prefer to it lies beside it (``pytorch_model.bin`` beside ``model.safetensors``). Other
    files (a ``README.onnx``, a safetensors file of another name) do not make a pickle safe. A
    trainer's resume state (``training_args.bin``, ``optimizer.pt``, ...) is never loaded as weights.
    """
    files = [p for p in folder.rglob("*") if p.is_file()]
    safe = [p for p in files if p.suffix in SAFE_SUFFIXES]
    pickled = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    unshadowed = [p for p in pickled if not (p.parent / _safetensors_name(p.name)).is_file()
                  and not _TRAINING_STATE.match(p.name)]
    if unshadowed and not allow_pickle:
        names = ", ".join(sorted(str(p.relative_to(folder)) for p in unshadowed)[:3])
        raise ModelSourceError(
            f"{source}: pickle-based weights ({names}) with no safetensors file that loaders would take "
            "instead; pickle can execute code when loaded. "
            "Convert the checkpoint to safetensors, or set allow_pickle if you trust its origin"
        )
    if not safe and not pickled:
        raise ModelSourceError(f"{source}: no model weights found (expected *.safetensors or *.onnx)")


def resolve(source: str, *, allow_pickle: bool = False, revision: str | None = None) -> Path:
    """A local folder holding the model at ``source`` (hub id, local folder or ``s3://`` prefix)."""
    if storage.is_s3(source):
        folder = _from_s3(source)
    elif Path(source).expanduser().exists():
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ModelSourceError(f"{source}: is a file; a model is a folder (save_pretrained layout)")
        if artifacts.is_published(str(folder)):
            folder = artifacts.fetch(str(folder))  # the current version, every file verified
    elif _HUB_ID.match(source):
        folder = _from_hub(source, allow_pickle=allow_pickle, revision=revision)
    else:
        raise ModelSourceError(f"{source}: not a local folder, an s3:// URI or a hub id (owner/name)")
    check_weights(folder, source, allow_pickle)
    return folder


def _s3_listing(uri: str) -> tuple[list[str], list[storage.ObjectInfo], str]:
    """The files under a plain prefix, their recorded sizes and hashes, and a key over all of them.

    The key is the content hash an artifact of these files would have. Objects stored by other
    tools carry no recorded SHA-256; their ETag stands in, so the key still changes with them.
    """
    keys = storage.list_files(uri)
    if not keys:
        raise ModelSourceError(f"{uri}: nothing stored under this prefix")
    infos = [storage.stat(storage.join(uri, k)) for k in keys]
    entries = [artifacts.FileEntry(k, i.size, i.sha256 or f"etag:{_etag(i.uri)}") for k, i in zip(keys, infos)]
    return keys, infos, artifacts.content_hash(entries)


def _etag(uri: str) -> str:
    loc = storage.parse(uri)
    return storage.retrying(lambda: storage.s3_client().head_object(Bucket=loc.bucket, Key=loc.key)["ETag"],
                            f"looking up {uri}")


def _from_s3(uri: str) -> Path:
    if artifacts.is_published(uri):
        return artifacts.fetch(uri)
    # A plain prefix (e.g. a checkpoint someone copied up): cached by the listing's recorded hashes.
    keys, infos, key = _s3_listing(uri)
    dest = storage.local_cache_dir() / "models" / key
    done = dest / ".complete"
    if not done.exists():
        for k, info in zip(keys, infos):
            storage.download(storage.join(uri, k), dest / k, expected_sha256=info.sha256)
        done.write_text(uri)
    return dest


def _from_hub(repo_id: str, *, allow_pickle: bool, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    ignore = [] if allow_pickle else [f"*{s}" for s in PICKLE_SUFFIXES]
    try:
        path = snapshot_download(repo_id, revision=revision, ignore_patterns=ignore + ["*.msgpack", "*.h5"])
    except Exception as e:  # noqa: BLE001 - offline, gated, missing: all end here
        raise ModelSourceError(f"{repo_id}: cannot fetch from the hub: {e}") from None
    return Path(path)


def folder_hash(folder: str | Path) -> str:
    """The content hash of a resolved model folder: its files, hidden ones left out (the s3 cache marks a
    finished download with ``.complete``; hub snapshots hold ``.gitattributes``), so one model has one
    hash whichever stage resolved it and from where."""
    return artifacts.content_hash([f for f in artifacts.scan_dir(folder) if not f.path.startswith(".")])


def fingerprint(source: str, *, revision: str | None = None) -> str:
    """A key that changes whenever the model at ``source`` does, found without downloading it.

    A published artifact gives its content hash; a plain ``s3://`` prefix the hash of its listing
    (names, sizes, recorded SHA-256s); a local folder the hash of its files; a hub id the commit its
    revision points at now (from the hub, or offline from the local cache). Pipelines pass it to
    cached steps so that a cache hit means the same model, not merely the same name.
    """
    if storage.is_s3(source) or Path(source).expanduser().exists():
        if artifacts.is_published(source):
            return "sha256:" + artifacts.read_manifest(source).content_hash
        if storage.is_s3(source):
            return "sha256:" + _s3_listing(source)[2]
        return "sha256:" + folder_hash(Path(source).expanduser())
    if not _HUB_ID.match(source):
        raise ModelSourceError(f"{source}: not a local folder, an s3:// URI or a hub id (owner/name)")
    from huggingface_hub import HfApi, snapshot_download

    try:
        return f"hub:{source}@{HfApi().model_info(source, revision=revision).sha}"
    except Exception as online_error:  # noqa: BLE001 - offline or unreachable: try the local cache
        try:
            return f"hub:{source}@{Path(snapshot_download(source, revision=revision, local_files_only=True)).name}"
        except Exception:  # noqa: BLE001
            raise ModelSourceError(f"{source}: cannot pin the hub revision (not reachable, not cached): "
                                   f"{online_error}") from None


def require_fingerprint(source: str, expected: str) -> None:
    """Refuse ``source`` if it is no longer the model ``expected`` (a fingerprint) was taken from."""
    now = fingerprint(source)
    if now != expected:
        raise ModelSourceError(f"{source}: changed since the run pinned it ({expected} -> {now}); "
                               "rerun the pipeline to use the new model")
