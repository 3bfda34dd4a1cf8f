"""One set of calls for local paths and ``s3://`` URIs.

* The S3 endpoint, region and credentials come from the environment through boto3; nothing here
  names an endpoint or a region. The settings (in a cluster: keys of the S3 Secret, see
  ``inkbooth.cluster.S3_KEYS`` and ``S3_OPTIONAL``):

  - ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``, ``AWS_PROFILE``): credentials;
  - ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``): the store, for anything but AWS itself (GCS:
    ``https://storage.googleapis.com``, with HMAC keys as the credentials);
  - ``AWS_REGION`` or ``AWS_DEFAULT_REGION``: the region (unset: boto3's, from the profile, else
    us-east-1 for S3). boto3 reads ``AWS_DEFAULT_REGION`` only; inkbooth passes ``AWS_REGION`` on;
  - ``AWS_REQUEST_CHECKSUM_CALCULATION``, ``AWS_RESPONSE_CHECKSUM_VALIDATION`` (``when_supported``, the
    default, or ``when_required``), read by boto3: by default it adds a CRC32 to every upload (over
    HTTPS as an ``aws-chunked`` body with an ``x-amz-trailer``) and asks for checksums on reads. Google
    Cloud Storage's S3 API and some other S3-compatibles refuse such uploads: set both to
    ``when_required`` there. Every object still carries its SHA-256, verified on read (below);
  - ``INKBOOTH_S3_ADDRESSING_STYLE``: ``path`` (``https://host/bucket/key``), ``virtual``
    (``https://bucket.host/key``) or ``auto``; unset: ``path`` with a custom endpoint, else ``auto``.
    boto3 has no environment variable for it (only ``~/.aws/config``), so inkbooth reads this one;
    any other value is an error naming the variable.
* Every object written through this module carries its SHA-256 in its metadata (``x-amz-meta-sha256``)
  and every read verifies it, so corruption at rest or on the wire is an error, never data.
* Transient failures (throttling, 5xx, dropped connections) are retried with capped exponential
  backoff and jitter, on top of botocore's own per-request retries.
* Keys built from user input cannot escape their prefix: ``..``, absolute paths, backslashes and
  control characters are refused with an error that names the offending key.
* Local writes are atomic (temporary file in the same folder, fsync, rename).

The calls every step uses (``write_bytes``, ``read_bytes``, ``upload``, ``download``, ``stat``, ``exists``,
``list_files``, ``delete`` and the rest) are defined here and call each other through this module, so a test
that patches ``storage.download`` or ``storage.read_bytes`` patches them for all. Below them, each submodule
imports only the ones listed before it:

* ``locations``: URIs and safe keys (``Location``, ``parse``, ``join``, ``relative``, ``check_part``);
* ``errors``: ``StorageError`` and its kinds;
* ``retries``: ``RetryPolicy``, the process-wide policy, ``retrying``, ``redact``;
* ``localfiles``: atomic local writes, local errors, ``sha256_file``, the cache folder;
* ``s3client``: the boto3 client (imported only when first used), transfers, object calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from inkbooth.storage import localfiles
from inkbooth.storage.errors import AlreadyExistsError, ChecksumError, NotFoundError, StorageError
from inkbooth.storage.localfiles import (
    CHUNK,
    _atomic_local,
    _local_error,  # inkbooth.artifacts uses it as storage._local_error
    local_cache_dir,
    sha256_file,
    short_name,
    temp_dir,
)
from inkbooth.storage.locations import Location, UnsafeKeyError, check_part, is_s3, join, parse, relative
from inkbooth.storage.retries import DEFAULT_RETRY, RetryPolicy, redact, retrying, set_retry_policy
from inkbooth.storage.s3client import _not_found, _object_call, _transfer_config, s3_client

__all__ = [
    "CHUNK", "DEFAULT_RETRY", "SHA256_META", "AlreadyExistsError", "ChecksumError", "Location",
    "NotFoundError", "ObjectInfo", "RetryPolicy", "StorageError", "UnsafeKeyError", "check_part", "delete",
    "delete_prefix", "download", "ensure_bucket", "exists", "is_s3", "join", "list_files", "local_cache_dir",
    "parse", "read_bytes", "read_text", "redact", "relative", "retrying", "s3_client", "set_retry_policy",
    "sha256_file", "short_name", "stat", "temp_dir", "upload", "upload_dir", "write_bytes", "write_text",
]

SHA256_META = "sha256"


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """What we know of a stored object without reading it."""

    uri: str
    size: int
    sha256: str | None


def write_bytes(uri: str, data: bytes, *, if_absent: bool = False, content_type: str | None = None) -> ObjectInfo:
    """Write ``data`` at ``uri`` with its SHA-256; ``if_absent`` refuses to overwrite."""
    digest = hashlib.sha256(data).hexdigest()
    loc = parse(uri)
    if not loc.is_s3:
        path = loc.path
        if if_absent:
            # Whole or absent, never visible half-written (hard link of a finished temporary file).
            if not localfiles.publish_absent(path, data, uri):
                raise AlreadyExistsError(f"{uri}: already exists and may not be overwritten")
            return ObjectInfo(uri, len(data), digest)
        with _atomic_local(path, uri) as tmp:
            tmp.write_bytes(data)
        return ObjectInfo(uri, len(data), digest)

    extra: dict[str, Any] = {"Metadata": {SHA256_META: digest}}
    if content_type:
        extra["ContentType"] = content_type
    if if_absent:
        extra["IfNoneMatch"] = "*"

    def put() -> None:
        from botocore.exceptions import ClientError

        try:
            s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AlreadyExistsError(f"{uri}: already exists and may not be overwritten") from None
            raise

    retrying(put, f"writing {uri}")
    return ObjectInfo(uri, len(data), digest)


def read_bytes(uri: str, *, expected_sha256: str | None = None) -> bytes:
    """Read the whole object, verifying its SHA-256 (recorded or expected)."""
    loc = parse(uri)
    if not loc.is_s3:
        try:
            data = loc.path.read_bytes()
        except IsADirectoryError:
            raise StorageError(f"{uri}: is a folder, not a file") from None
        except OSError as e:
            raise _local_error(e, uri, "reading") from None
        _verify(uri, hashlib.sha256(data).hexdigest(), expected_sha256)
        return data

    def get() -> bytes:
        resp = _object_call("get_object", uri, loc)
        body = resp["Body"].read()
        recorded = resp.get("Metadata", {}).get(SHA256_META)
        _verify(uri, hashlib.sha256(body).hexdigest(), expected_sha256 or recorded)
        return body

    return retrying(get, f"reading {uri}")


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str, **kw: Any) -> ObjectInfo:
    return write_bytes(uri, text.encode("utf-8"), **kw)


def _verify(uri: str, actual: str, expected: str | None) -> None:
    if expected and actual != expected:
        raise ChecksumError(f"{uri}: checksum mismatch (sha256 recorded {expected[:16]}..., read {actual[:16]}...)")


def upload(local_path: str | Path, uri: str) -> ObjectInfo:
    """Copy a local file to ``uri`` (multipart for large files), recording its SHA-256."""
    local_path = Path(local_path)
    try:
        digest = sha256_file(local_path)
        size = local_path.stat().st_size
    except OSError as e:
        raise _local_error(e, str(local_path), "reading") from None
    loc = parse(uri)
    if not loc.is_s3:
        with _atomic_local(loc.path, uri) as tmp:
            shutil.copyfile(local_path, tmp)
            if sha256_file(tmp) != digest:
                raise ChecksumError(f"{uri}: copy of {local_path} does not match its source")
        return ObjectInfo(uri, size, digest)

    def put() -> None:
        s3_client().upload_file(
            str(local_path), loc.bucket, loc.key, ExtraArgs={"Metadata": {SHA256_META: digest}},
            Config=_transfer_config(),
        )

    retrying(put, f"uploading {local_path} to {uri}")
    return ObjectInfo(uri, size, digest)


def download(uri: str, local_path: str | Path, *, expected_sha256: str | None = None) -> ObjectInfo:
    """Copy ``uri`` to a local file atomically, verifying its SHA-256 before it becomes visible."""
    local_path = Path(local_path)
    loc = parse(uri)
    if not loc.is_s3:
        if not loc.path.is_file():
            raise NotFoundError(f"{uri}: no such file")
        with _atomic_local(local_path, str(local_path)) as tmp:
            shutil.copyfile(loc.path, tmp)
            digest = sha256_file(tmp)
            _verify(uri, digest, expected_sha256)
        return ObjectInfo(uri, local_path.stat().st_size, digest)

    def get() -> ObjectInfo:
        info = stat(uri)
        with _atomic_local(local_path, str(local_path)) as tmp:
            s3_client().download_file(loc.bucket, loc.key, str(tmp), Config=_transfer_config())
            digest = sha256_file(tmp)
            _verify(uri, digest, expected_sha256 or info.sha256)
        return ObjectInfo(uri, info.size, digest)

    return retrying(get, f"downloading {uri}")


def stat(uri: str) -> ObjectInfo:
    """Size and recorded SHA-256 of an object; NotFoundError if absent."""
    loc = parse(uri)
    if not loc.is_s3:
        try:
            st = loc.path.stat()
        except OSError as e:
            raise _local_error(e, uri, "stat") from None
        return ObjectInfo(uri, st.st_size, None)

    def head() -> ObjectInfo:
        resp = _object_call("head_object", uri, loc)
        return ObjectInfo(uri, resp["ContentLength"], resp.get("Metadata", {}).get(SHA256_META))

    return retrying(head, f"looking up {uri}")


def exists(uri: str) -> bool:
    try:
        stat(uri)
        return True
    except NotFoundError:
        return False


def list_files(prefix: str, *, links: list[str] | None = None) -> list[str]:
    """Keys of all objects (files) under ``prefix``, relative to it, sorted; hidden partials skipped.

    Locally, folders that are symbolic links are not followed; ``links`` (a list) collects them.
    """
    loc = parse(prefix)
    if not loc.is_s3:
        root = loc.path
        if not root.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            if links is not None:
                links.extend(Path(dirpath, d).relative_to(root).as_posix() for d in dirnames
                             if Path(dirpath, d).is_symlink())
            dirnames[:] = sorted(d for d in dirnames if ".partial-" not in d)
            for fn in filenames:
                if ".partial-" in fn:
                    continue
                out.append(Path(dirpath, fn).relative_to(root).as_posix())
        return sorted(out)

    base = loc.key.rstrip("/")
    base = base + "/" if base else ""

    def listing() -> list[str]:
        keys = []
        paginator = s3_client().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=base):
                keys.extend(obj["Key"][len(base):] for obj in page.get("Contents", []))
        except Exception as e:
            if _not_found(e):
                raise NotFoundError(f"{prefix}: no such bucket") from None
            raise
        return sorted(k for k in keys if k and not k.endswith("/"))

    return retrying(listing, f"listing {prefix}")


def delete(uri: str) -> None:
    """Delete one object or file (missing is fine)."""
    loc = parse(uri)
    if not loc.is_s3:
        with contextlib.suppress(FileNotFoundError):
            loc.path.unlink()
        return
    retrying(lambda: s3_client().delete_object(Bucket=loc.bucket, Key=loc.key), f"deleting {uri}")


def delete_prefix(prefix: str) -> int:
    """Delete everything under ``prefix``; returns how many objects went."""
    loc = parse(prefix)
    if not loc.is_s3:
        if loc.path.is_dir():
            n = sum(len(f) for _, _, f in os.walk(loc.path))
            shutil.rmtree(loc.path)
            return n
        return 0
    keys = list_files(prefix)
    for rel in keys:
        delete(join(prefix, rel))
    return len(keys)


def upload_dir(local_dir: str | Path, uri: str) -> list[ObjectInfo]:
    """Upload every file under ``local_dir`` to the same relative keys under ``uri``."""
    local_dir = Path(local_dir)
    infos = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir).as_posix()
        infos.append(upload(path, join(uri, rel)))
    return infos


def ensure_bucket(uri: str) -> None:
    """Create the bucket of an ``s3://`` URI if it does not exist (no-op for local paths)."""
    loc = parse(uri)
    if not loc.is_s3:
        loc.path.mkdir(parents=True, exist_ok=True)
        return
    client = s3_client()

    def make() -> None:
        from botocore.exceptions import ClientError

        try:
            client.head_bucket(Bucket=loc.bucket)
        except ClientError as e:
            if not _not_found(e):
                raise
            try:
                client.create_bucket(Bucket=loc.bucket)
            except ClientError as e2:
                if e2.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    retrying(make, f"creating bucket {loc.bucket}")
