"""Typed access to Redis Streams (redis-py's replies are loosely typed); bytes replies assumed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis

__all__ = [
    "Entry",
    "RedisClient",
    "pool_of_stream",
    "position",
    "text",
    "xrange",
    "xread",
    "xreadgroup",
    "xrevrange",
]

RedisClient = Redis
"""What our readers take: a ``redis.asyncio.Redis``, or a ``RedisCluster`` cast to it once at the
composition root (the cluster client answers the same commands for single-slot calls)."""

Entry = tuple[bytes, dict[bytes, bytes]]
"""A raw stream entry: (position, fields)."""


def text(value: bytes | str | None) -> str:
    """A reply value as text ("" for None)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def position(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as a tuple that orders like the stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def pool_of_stream(stream: str) -> str:
    """The pool of a stream key (the text inside its hash tag)."""
    return stream[stream.index("{") + 1 : stream.rindex("}")]


async def xrange(
    redis: Redis, key: str, min: str = "-", max: str = "+", count: int | None = None
) -> list[Entry]:
    return cast(list[Entry], await redis.xrange(key, min=min, max=max, count=count))


async def xrevrange(
    redis: Redis, key: str, max: str = "+", min: str = "-", count: int | None = None
) -> list[Entry]:
    return cast(list[Entry], await redis.xrevrange(key, max=max, min=min, count=count))


def _streams(reply: Any) -> list[tuple[str, list[Entry]]]:
    return [(text(name), cast(list[Entry], entries)) for name, entries in reply or []]


async def xread(
    redis: Redis, streams: dict[str, str], count: int | None = None, block: int | None = None
) -> list[tuple[str, list[Entry]]]:
    """XREAD over several streams; returns (stream key, entries) pairs."""
    return _streams(await redis.xread(cast(Any, streams), count=count, block=block))


async def xreadgroup(
    redis: Redis,
    group: str,
    consumer: str,
    streams: dict[str, str],
    count: int | None = None,
    block: int | None = None,
) -> list[tuple[str, list[Entry]]]:
    """XREADGROUP over several streams; returns (stream key, entries) pairs."""
    return _streams(await redis.xreadgroup(group, consumer, cast(Any, streams), count=count, block=block))


# Reading many streams: one command per stream, pipelined. A Cluster refuses one XREAD over keys of
# different slots (and each pool's stream is its own slot); the cluster client splits a pipeline
# by node and sends each node its part at once, so this stays one round trip (per node).


async def xrange_each(
    redis: RedisClient, reads: Sequence[tuple[str, str]], count: int
) -> list[list[Entry] | Exception]:
    """``XRANGE key <after> + COUNT count`` for each ``(key, after)``, in one round trip; ``after``
    is a position to read after (``""`` or ``0-0``: from the start). Returns each read's entries, or the
    error it met, in order."""
    async with redis.pipeline(transaction=False) as pipe:
        for key, after in reads:
            pipe.xrange(key, min=f"({after}" if after not in ("", "0-0") else "-", max="+", count=count)
        return cast(list[list[Entry] | Exception], await pipe.execute(raise_on_error=False))


async def xreadgroup_each(
    redis: RedisClient, group: str, consumer: str, streams: Sequence[str], count: int
) -> list[list[Entry] | Exception]:
    """A non-blocking ``XREADGROUP ... STREAMS key >`` for each stream, in one round trip. Returns
    each stream's new entries, or the error it met, in order."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in streams:
            pipe.xreadgroup(group, consumer, {key: ">"}, count=count)
        replies = await pipe.execute(raise_on_error=False)
    return [r if isinstance(r, Exception) else next((e for _, e in _streams(r)), []) for r in replies]
