"""Work split into shards: ``"i/n"`` specs, shared by every stage that takes ``--shard``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def parse(shard: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), with 0 <= i < n."""
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"shard {shard!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {shard!r}: need 0 <= i < n")
    return i, n


def specs(count: int) -> list[str]:
    """``["0/n", ..., "n-1/n"]``."""
    if count < 1:
        raise ValueError(f"num_shards must be at least 1, got {count}")
    return [f"{i}/{count}" for i in range(count)]


def select(items: Sequence[T], shard: str) -> list[T]:
    """This shard's items: every n-th from i, so shards stay even whatever the order of sizes."""
    i, n = parse(shard)
    return list(items[i::n])
