"""Reading the history series (``projectors.history``): gauges filled across quiet minutes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import msgspec
from redis.asyncio import Redis

from events import Keys

from .history import Bucket, History, HistoryState, Point, Resolution

__all__ = ["HistoryReader", "PoolSeries"]

_bucket = msgspec.json.Decoder(Bucket)
_state = msgspec.json.Decoder(HistoryState)


class PoolSeries(msgspec.Struct, kw_only=True):
    """One pool's points from ``start`` (ms), one per ``step`` ms, oldest first.

    ``ready`` and ``running`` are the counts at the end of each step (carried over quiet steps);
    the others are what happened in the step (sums).
    """

    start: int
    step: int
    ready: list[int]
    running: list[int]
    checkouts: list[int]
    failures: list[int]
    clones: list[int]
    clone_s: list[float]
    boots: list[int]
    boot_s: list[float]


class HistoryReader:
    """Queries over the history series.

    Args:
        redis: client (bytes replies).
        keys: key names.
        history: the projection (its resolutions); a default one if not given.
    """

    def __init__(self, redis: Redis, keys: Keys, history: History | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.history = history or History()

    async def minutes(self, pools: Sequence[str], now: int, count: int = 60) -> dict[str, PoolSeries]:
        """The last ``count`` minutes up to and including the minute of ``now``, per pool."""
        return await self.series(pools, self.history.minute, now, count)

    async def hours(self, pools: Sequence[str], now: int, count: int = 24) -> dict[str, PoolSeries]:
        """The last ``count`` hours up to and including the hour of ``now``, per pool."""
        return await self.series(pools, self.history.hour, now, count)

    async def series(
        self, pools: Sequence[str], res: Resolution, now: int, count: int
    ) -> dict[str, PoolSeries]:
        """``count`` points of ``res`` ending with the one holding ``now``, per pool, in one round trip."""
        last = now // res.unit_ms
        first = last - max(count, 1) + 1
        indices = list(range(first // res.per, last // res.per + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.get(History.state_key(self.keys, pool))
                for index in indices:
                    pipe.get(res.key(self.keys, pool, index))
            raws = cast("list[bytes | None]", await pipe.execute())
        out: dict[str, PoolSeries] = {}
        width = len(indices) + 1
        for i, pool in enumerate(pools):
            chunk = raws[i * width : (i + 1) * width]
            state = _state.decode(chunk[0]) if chunk[0] is not None else HistoryState()
            buckets = {
                index: _bucket.decode(raw) for index, raw in zip(indices, chunk[1:], strict=True) if raw
            }
            out[pool] = _fill(res, first, last, buckets, state)
        return out


def _opening(res: Resolution, first: int, buckets: dict[int, Bucket], state: HistoryState) -> tuple[int, int]:
    """The gauges just before unit ``first``."""
    index, offset = divmod(first, res.per)
    head = buckets.get(index)
    if head is not None:
        earlier = [o for o in head.pts if o < offset]
        if earlier:
            p = head.pts[max(earlier)]
            return p.ready, p.running
        return head.open
    later = [i for i in buckets if i > index]
    if later:
        return buckets[min(later)].open
    return state.ready, state.running  # nothing happened in the window: the counts are today's


def _fill(
    res: Resolution, first: int, last: int, buckets: dict[int, Bucket], state: HistoryState
) -> PoolSeries:
    ready, running = _opening(res, first, buckets, state)
    out = PoolSeries(
        start=first * res.unit_ms,
        step=res.unit_ms,
        ready=[],
        running=[],
        checkouts=[],
        failures=[],
        clones=[],
        clone_s=[],
        boots=[],
        boot_s=[],
    )
    empty = Point()
    for unit in range(first, last + 1):
        index, offset = divmod(unit, res.per)
        bucket = buckets.get(index)
        p = bucket.pts.get(offset) if bucket is not None else None
        if p is not None:
            ready, running = p.ready, p.running
        else:
            p = empty
        out.ready.append(ready)
        out.running.append(running)
        out.checkouts.append(p.checkouts)
        out.failures.append(p.failures)
        out.clones.append(p.clones)
        out.clone_s.append(p.clone_s)
        out.boots.append(p.boots)
        out.boot_s.append(p.boot_s)
    return out
