"""Local files: atomic writes (``_atomic_local``), an ``OSError`` as a storage error (``_local_error``),
``sha256_file`` (and ``CHUNK``, the block size it reads), ``short_name`` for temporary names, the local cache
folder and temporary folders.

May import ``errors`` of this package.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from inkbooth.storage.errors import NotFoundError, StorageError

CHUNK = 1 << 20


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


def local_cache_dir() -> Path:
    """Where downloaded artifacts and models are cached (``INKBOOTH_CACHE`` or ~/.cache/inkbooth)."""
    root = os.environ.get("INKBOOTH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "inkbooth")
    return Path(root)


def temp_dir(prefix: str = "inkbooth-") -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)
