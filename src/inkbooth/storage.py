"""One set of calls for local paths and ``s3://`` URIs.

* The S3 endpoint, region and credentials come from the environment through boto3 (for example
  ``AWS_ENDPOINT_URL_S3``); nothing here names an endpoint.
* Every object written through this module carries its SHA-256 in its metadata (``x-amz-meta-sha256``)
  and every read verifies it, so corruption at rest or on the wire is an error, never data.
* Transient failures (throttling, 5xx, dropped connections) are retried with capped exponential
  backoff and jitter, on top of botocore's own per-request retries.
* Keys built from user input cannot escape their prefix: ``..``, absolute paths, backslashes and
  control characters are refused with an error that names the offending key.
* Local writes are atomic (temporary file in the same folder, fsync, rename).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

SHA256_META = "sha256"
CHUNK = 1 << 20


class StorageError(Exception):
    """An object could not be read or written (after retries, where retrying made sense)."""


class NotFoundError(StorageError, FileNotFoundError):
    """No object or file at this URI."""


class ChecksumError(StorageError):
    """The bytes read do not match the SHA-256 recorded when they were written."""


class AlreadyExistsError(StorageError, FileExistsError):
    """A write that must not overwrite found something at its URI."""


class UnsafeKeyError(ValueError):
    """A key or path component would escape its prefix or contains bytes we refuse."""


# ---------------------------------------------------------------------------------------------
# URIs and safe keys
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Location:
    """A parsed URI: ``s3://bucket/key`` or a local absolute path (scheme ``file``)."""

    scheme: str
    bucket: str
    key: str

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def path(self) -> Path:
        if self.is_s3:
            raise ValueError(f"{self} is not a local path")
        return Path(self.key)

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.is_s3 else self.key


def check_part(part: str, what: str = "key component") -> str:
    """Refuse a path component that could escape its prefix or carries odd bytes."""
    if not isinstance(part, str) or part == "":
        raise UnsafeKeyError(f"empty {what}")
    bad = [c for c in part if ord(c) < 0x20 or ord(c) == 0x7F]
    if bad:
        raise UnsafeKeyError(f"{what} {part!r} contains control characters")
    if "\\" in part:
        raise UnsafeKeyError(f"{what} {part!r} contains a backslash")
    if part.startswith("/"):
        raise UnsafeKeyError(f"{what} {part!r} is absolute; a relative key is required")
    for seg in part.split("/"):
        if seg in ("", ".", ".."):
            raise UnsafeKeyError(f"{what} {part!r} has an empty, '.' or '..' segment")
    if len(part.encode("utf-8", "surrogatepass")) > 1024:
        raise UnsafeKeyError(f"{what} {part[:40]!r}... is longer than 1024 bytes")
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeKeyError(f"{what} {part!r} is not valid UTF-8") from None
    return part


def parse(uri: str | os.PathLike[str]) -> Location:
    """Parse an ``s3://bucket/key`` URI or a local path (``file://`` accepted)."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        rest = text[5:]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"{text!r}: an s3:// URI needs a bucket")
        if key.strip("/"):
            check_part(key.rstrip("/"), "S3 key")
        return Location("s3", bucket, key)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"{text!r}: unsupported URI scheme (use s3:// or a local path)")
    if text.startswith("file://"):
        text = text[7:]
    return Location("file", "", str(Path(text).absolute()))


def join(uri: str, *parts: str) -> str:
    """``uri`` joined with relative key parts, each checked so that the result stays under ``uri``."""
    loc = parse(uri)
    for p in parts:
        check_part(p)
    rel = "/".join(parts)
    if loc.is_s3:
        base = loc.key.rstrip("/")
        return f"s3://{loc.bucket}/{base + '/' if base else ''}{rel}"
    return str(Path(loc.key, *rel.split("/")))


def relative(uri: str, prefix: str) -> str:
    """The key of ``uri`` relative to ``prefix`` (which must contain it)."""
    a, b = parse(uri), parse(prefix)
    akey = a.key if a.is_s3 else Path(a.key).as_posix()
    bkey = (b.key if b.is_s3 else Path(b.key).as_posix()).rstrip("/")
    if a.scheme != b.scheme or a.bucket != b.bucket or not (akey == bkey or akey.startswith(bkey + "/")):
        raise ValueError(f"{uri} is not under {prefix}")
    return akey[len(bkey) + 1 :]


def is_s3(uri: str) -> bool:
    return os.fspath(uri).startswith("s3://")


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 8.0
    # botocore's own retries of one HTTP request (a multipart part is retried alone this way).
    request_attempts: int = 3
    # A store that accepts connections but never answers: each request gives up after read_timeout
    # seconds without a byte, and no new attempt starts once deadline seconds have passed, so one
    # operation ends within about deadline + request_attempts * read_timeout.
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    deadline: float = 300.0

    def delay(self, attempt: int) -> float:
        # Full jitter: spread retries of many workers so they do not hammer a throttled store in step.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


DEFAULT_RETRY = RetryPolicy()
_retry_policy = DEFAULT_RETRY

_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "RequestLimitExceeded",
}


def set_retry_policy(policy: RetryPolicy) -> None:
    """Replace the process-wide retry policy (tests use a fast one)."""
    global _retry_policy
    _retry_policy = policy


def _is_transient(exc: BaseException) -> bool:
    from botocore import exceptions as bx

    if isinstance(exc, ChecksumError):
        return True  # corruption on the wire: a second read may well be clean
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.ResponseStreamingError,
                        bx.IncompleteReadError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return err.get("Code") in _TRANSIENT_CODES or status >= 500 or status == 429
    return False


def retrying(fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Run ``fn`` and retry it on transient storage failures; the final error names ``what``."""
    policy = policy or _retry_policy
    started = time.monotonic()
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as raised:  # noqa: BLE001 - classified below
            exc = _as_checksum_error(raised, what)
            if not _is_transient(exc):
                if _is_store_error(exc):  # auth, missing credentials, bad request: one line naming the URI
                    raise StorageError(f"{redact(what)}: {_describe(exc)}") from None
                raise
            # A mismatch read twice is corruption at rest, not on the wire: no point in more tries.
            if isinstance(exc, ChecksumError) and attempt >= 1:
                raise exc from raised
            wait = policy.delay(attempt)
            elapsed = time.monotonic() - started
            if attempt == policy.attempts - 1 or elapsed + wait > policy.deadline:
                if isinstance(exc, ChecksumError):
                    raise exc from raised
                stalled = f" (no answer in {elapsed:.0f}s: the store stalls)" if _is_timeout(exc) else ""
                raise StorageError(f"{redact(what)}: failed after {attempt + 1} attempts{stalled}: "
                                   f"{_describe(exc)}") from None
            log.warning("%s: %s; retrying in %.2fs (%d/%d)", redact(what), _describe(exc), wait, attempt + 1,
                        policy.attempts - 1)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _is_timeout(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    return isinstance(exc, (ReadTimeoutError, ConnectTimeoutError, TimeoutError))


def _as_checksum_error(exc: BaseException, what: str) -> BaseException:
    """botocore's own integrity check (the server's CRC) failing is a checksum error too."""
    from botocore.exceptions import FlexibleChecksumError

    if isinstance(exc, FlexibleChecksumError):
        return ChecksumError(f"{what}: checksum mismatch on the wire ({exc})")
    return exc


def _describe(exc: BaseException) -> str:
    """A one-line description of a store error, with any credentials in URLs redacted."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return redact(f"{err.get('Code', '?')}: {err.get('Message', '')}".strip())
    return redact(f"{type(exc).__name__}: {exc}")


# user:password@ in a URL, and the signing parameters of presigned URLs.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']*@")
_SIGNED = re.compile(r"(?i)\b(X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId|"
                     r"x-amz-security-token)=[^&\s\"']+")


def redact(text: str) -> str:
    """``text`` with credentials in URLs replaced by ``***`` (user info, signatures, session tokens)."""
    return _SIGNED.sub(r"\1=***", _USERINFO.sub(r"\1***@", text))


def _is_store_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, (BotoCoreError, ClientError))


# ---------------------------------------------------------------------------------------------
# The S3 client
# ---------------------------------------------------------------------------------------------

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()
_ENV_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment (cached per environment)."""
    policy = _retry_policy
    key = (*(os.environ.get(k) for k in _ENV_KEYS), policy.request_attempts, policy.connect_timeout,
           policy.read_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
            config = Config(
                retries={"max_attempts": policy.request_attempts, "mode": "standard"},
                connect_timeout=policy.connect_timeout,
                read_timeout=policy.read_timeout,
                max_pool_connections=32,
                # S3-compatible stores on a plain host:port need path-style addressing.
                s3={"addressing_style": "path" if custom_endpoint else "auto"},
            )
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            client = boto3.session.Session().client("s3", config=config, region_name=region)
            _clients[key] = client
        return client


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    # Multipart above 16 MiB, in 16 MiB parts; threads stay few, the machines are shared.
    return TransferConfig(multipart_threshold=16 * CHUNK, multipart_chunksize=16 * CHUNK, max_concurrency=4)


def _object_call(method: str, uri: str, loc: Location) -> dict[str, Any]:
    """``get_object`` / ``head_object`` on one key, a 404 turned into NotFoundError."""
    try:
        return getattr(s3_client(), method)(Bucket=loc.bucket, Key=loc.key)
    except Exception as e:
        if _not_found(e):
            raise NotFoundError(f"{uri}: no such object") from None
        raise


def _not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return err.get("Code") in ("NoSuchKey", "404", "NotFound", "NoSuchBucket") or status == 404
    return False


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """What we know of a stored object without reading it."""

    uri: str
    size: int
    sha256: str | None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _local_error(exc: OSError, uri: str, action: str) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{uri}: no space left on device while {action}; nothing was published")
    if exc.errno == errno.EDQUOT:
        return StorageError(f"{uri}: disk quota exceeded while {action}; nothing was published")
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{uri}: no such file")
    return StorageError(f"{uri}: {action} failed: {exc.strerror or exc}")


@contextlib.contextmanager
def _atomic_local(path: Path, uri: str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _local_error(e, uri, "creating its folder") from None
    # Named by a hash, not after the target: a long name plus a suffix would be too long for a file.
    tmp = path.parent / f".{short_name(path.name)}.partial-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise _local_error(e, uri, "writing") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def short_name(name: str) -> str:
    """A short stand-in for a file name in temporary names (16 hex digits of its hash)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def write_bytes(uri: str, data: bytes, *, if_absent: bool = False, content_type: str | None = None) -> ObjectInfo:
    """Write ``data`` at ``uri`` with its SHA-256; ``if_absent`` refuses to overwrite."""
    digest = hashlib.sha256(data).hexdigest()
    loc = parse(uri)
    if not loc.is_s3:
        path = loc.path
        if if_absent:
            # O_EXCL on a lock file beside the target keeps two writers from both "winning".
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise AlreadyExistsError(f"{uri}: already exists and may not be overwritten") from None
            except OSError as e:
                raise _local_error(e, uri, "creating") from None
            try:
                os.write(fd, data)
                os.fsync(fd)
            except OSError as e:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise _local_error(e, uri, "writing") from None
            os.close(fd)
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


def local_cache_dir() -> Path:
    """Where downloaded artifacts and models are cached (``INKBOOTH_CACHE`` or ~/.cache/inkbooth)."""
    root = os.environ.get("INKBOOTH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "inkbooth")
    return Path(root)


def temp_dir(prefix: str = "inkbooth-") -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)
