"""Local files: atomic writes (``_atomic_local``; ``publish_absent``, whole and never over a file), an
``OSError`` as a storage error (``_local_error``), ``sha256_file`` (and ``CHUNK``, the block size it reads),
``short_name`` for temporary names, the local cache folder, temporary folders (``temp_dir``) and the sweep
of those that killed processes left (``sweep_temp_dirs``).

May import ``errors`` of this package.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from inkbooth.storage.errors import NotFoundError, StorageError

log = logging.getLogger(__name__)

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


def _partial_beside(path: Path, uri: str) -> Path:
    """A new temporary name beside ``path`` (its folder made), hidden and named by a hash: a long
    name plus a suffix would be too long for a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _local_error(e, uri, "creating its folder") from None
    return path.parent / f".{short_name(path.name)}.partial-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _atomic_local(path: Path, uri: str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    tmp = _partial_beside(path, uri)
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


def publish_absent(path: Path, data: bytes, uri: str) -> bool:
    """Write ``data`` at ``path`` unless a file is there; True if this call wrote it.

    No reader ever sees the file before all of its bytes: they go to a temporary file beside it
    (fsync'd), which is then hard-linked to ``path``, and a link never replaces a file. (An
    ``O_EXCL`` create is visible, empty, until its write lands, and stays empty if the writer is
    killed between the two.) Where the file system has no hard links, falls back to ``O_EXCL``.
    """
    tmp = _partial_beside(path, uri)
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                raise
            return _create_absent(path, data)
        _fsync_dir(path.parent)
        return True
    except OSError as e:
        raise _local_error(e, uri, "writing") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _create_absent(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return True


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot open or sync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def short_name(name: str) -> str:
    """A short stand-in for a file name in temporary names (16 hex digits of its hash)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def local_cache_dir() -> Path:
    """Where downloaded artifacts and models are cached (``INKBOOTH_CACHE`` or ~/.cache/inkbooth)."""
    root = os.environ.get("INKBOOTH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "inkbooth")
    return Path(root)


# inkbooth's temporary folders: <prefix>pid<N>-<8 random characters>, prefix "inkbooth-<what>-" (see temp_dir).
_TEMP_NAME = re.compile(r"inkbooth-(?:[a-z0-9]+-)*pid([0-9]+)-[a-z0-9_]{8}")
# A temporary folder of a process that is gone, unchanged for this long, is swept.
STALE_TEMP_SECONDS = 6 * 3600


def temp_dir(prefix: str = "inkbooth-") -> tempfile.TemporaryDirectory:
    """A temporary folder removed on exit; its name carries this process's id, so that one left by a
    killed process can be told from one in use (``sweep_temp_dirs``)."""
    return tempfile.TemporaryDirectory(prefix=f"{prefix}pid{os.getpid()}-")


def sweep_temp_dirs(root: str | Path | None = None, *, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove inkbooth's temporary folders that killed processes left in ``root`` (the temp folder).

    A folder goes only if all of these hold: its name is one ``temp_dir`` gives
    (``inkbooth-<what>-pid<N>-<8 characters>``); it is a folder, not a link, owned by this user;
    process N is gone (no such process here); and nothing in it changed for ``older_than`` seconds
    (6 hours). The age guards a run whose process id this one cannot see (a temp folder shared
    across pid namespaces): a working run changes its files. Anything else is never touched, nor are
    folders of older inkbooth versions (no pid in the name). Returns the folders removed; never raises.
    """
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    now = time.time()
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue
        if _process_alive(int(match.group(1))) or now - _last_change(entry.path, st.st_mtime) < older_than:
            continue
        try:
            shutil.rmtree(entry.path)  # does not follow links inside
        except OSError as e:
            log.warning("%s: could not remove this stale temporary folder: %s", entry.path, e)
            continue
        removed.append(Path(entry.path))
    if removed:
        log.info("removed %d temporary folder(s) left by killed inkbooth processes: %s", len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (when in doubt: yes, so nothing of it is removed)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process, alive
        return True
    return True


def _last_change(folder: str, mtime: float) -> float:
    """The newest modification time of ``folder`` and everything in it (links not followed)."""
    newest = mtime
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest
