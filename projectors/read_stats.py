"""Reading the daily clone/boot statistics (``projectors.daily_stats``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import msgspec
from redis.asyncio import Redis

from events import Keys

from .daily_stats import DailyStatsView, DurationStats, day_key

__all__ = ["StatsReader", "combine"]

_decoder = msgspec.json.Decoder(DailyStatsView)


def combine(parts: Iterable[DurationStats]) -> DurationStats:
    """Several pools' (or days') statistics as one: counts and totals add, min of mins, max of maxes."""
    out = DurationStats()
    for part in parts:
        if part.count == 0:
            continue
        if out.count == 0:
            out.min, out.max = part.min, part.max
        else:
            out.min, out.max = min(out.min, part.min), max(out.max, part.max)
        out.count += part.count
        out.total += part.total
    return out


class StatsReader:
    """Queries over the daily statistics."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def days(self, pools: Sequence[str], days: Sequence[str]) -> dict[str, dict[str, DailyStatsView]]:
        """Day -> pool -> statistics, for every pool and day asked (empty records where nothing
        happened), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in days:
                for pool in pools:
                    pipe.get(day_key(self.keys, pool, day))
            raws = cast("list[bytes | None]", await pipe.execute())
        out: dict[str, dict[str, DailyStatsView]] = {}
        it = iter(raws)
        for day in days:
            out[day] = {
                pool: _decoder.decode(raw)
                if (raw := next(it)) is not None
                else DailyStatsView(pool=pool, day=day)
                for pool in pools
            }
        return out

    async def day(self, pools: Sequence[str], day: str) -> dict[str, DailyStatsView]:
        """Pool -> statistics of ``day`` (``YYYY-MM-DD``, UTC)."""
        return (await self.days(pools, [day]))[day]
