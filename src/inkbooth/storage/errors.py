"""The errors of the storage calls: ``StorageError`` and its kinds (not found, checksum mismatch, already
exists). ``UnsafeKeyError``, a refused key, lives with the keys in ``locations``.

Imports nothing of the package.
"""

from __future__ import annotations


class StorageError(Exception):
    """An object could not be read or written (after retries, where retrying made sense)."""


class NotFoundError(StorageError, FileNotFoundError):
    """No object or file at this URI."""


class ChecksumError(StorageError):
    """The bytes read do not match the SHA-256 recorded when they were written."""


class AlreadyExistsError(StorageError, FileExistsError):
    """A write that must not overwrite found something at its URI."""
