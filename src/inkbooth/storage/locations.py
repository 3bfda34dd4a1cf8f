"""URIs and safe keys: ``Location`` (a parsed ``s3://`` URI or local path), ``parse``, ``join``, ``relative``,
``is_s3``, and ``check_part``, which refuses a key that could escape its prefix (``UnsafeKeyError``).

Imports nothing of the package.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


class UnsafeKeyError(ValueError):
    """A key or path component would escape its prefix or contains bytes we refuse."""


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
