"""Typed access to Redis Streams (redis-py's replies are loosely typed); bytes replies assumed."""

from __future__ import annotations

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
