"""What the dashboard shows, read from the projections (and, for the event feed, the log).

Pool rows are compact arrays, ``[size, ready, cloning, booting, running, completed]``, so 500 pools
cost a few kilobytes. Feed items are ``{"pool", "vm", "type", "at", "actor", "pos"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from events import Keys
from events.streams import Entry, position, text
from projectors.daily_stats import day_of
from projectors.pool_status import PoolStatus
from projectors.read import ReadModels
from projectors.read_history import HistoryReader, PoolSeries
from projectors.read_stats import StatsReader, combine
from projectors.views import PoolStatusView

__all__ = ["Snapshots", "feed_item", "major", "row"]

FEED_POOLS = 10
FEED_MAX = 40


def major(pool: str) -> str:
    """A pool's OS family as vmpooler's dashboard groups them: the name up to its first ``-``."""
    return pool.split("-", 1)[0]


def row(size: int, view: PoolStatusView) -> list[int]:
    """``[size, ready, cloning, booting, running, completed]`` of one pool."""
    c = view.counts
    return [
        view.size or size,
        c.get("ready", 0),
        c.get("cloning", 0),
        c.get("booting", 0),
        c.get("running", 0),
        c.get("completed", 0) + c.get("destroying", 0),
    ]


def feed_item(pool: str, entry: Entry) -> dict[str, Any]:
    """A log entry as the feed shows it (the envelope only: the body is not decoded)."""
    pos, fields = entry
    return {
        "pool": pool,
        "vm": text(fields.get(b"vm")),
        "type": text(fields.get(b"type")),
        "at": int(fields.get(b"at", b"0")),
        "actor": text(fields.get(b"actor")),
        "pos": text(pos),
    }


class Snapshots:
    """Builds the dashboard's JSON documents for a fixed list of pools."""

    def __init__(
        self, redis: Redis, keys: Keys, reads: ReadModels, pools: Sequence[str], sizes: dict[str, int]
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.reads = reads
        self.pools = list(pools)
        self.sizes = sizes
        self.stats = StatsReader(redis, keys)
        self.history = HistoryReader(redis, keys)

    async def rows(self, pools: Iterable[str], fresh_within: float = 0.0) -> dict[str, list[int]]:
        """Current rows of ``pools``; waits up to ``fresh_within`` s for the status projection."""
        pools = list(pools)
        if fresh_within:
            await asyncio.gather(*(self.reads.caught_up(p, PoolStatus.name, fresh_within) for p in pools))
        views = await self.reads.pool_status(pools)
        return {p: row(self.sizes.get(p, 0), views[p]) for p in pools}

    async def _heads(self) -> tuple[list[list[Entry]], list[str]]:
        """The newest entry of each pool's log and each status projection's checkpoint."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in self.pools:
                pipe.xrevrange(self.keys.stream(pool), count=1)
            for pool in self.pools:
                pipe.get(f"{self.keys.read_model(pool, PoolStatus.name)}:checkpoint")
            raws = await pipe.execute()
        n = len(self.pools)
        return cast("list[list[Entry]]", raws[:n]), [text(r) for r in raws[n:]]

    async def _feed(self, newest: dict[str, str]) -> list[dict[str, Any]]:
        """The latest events of the most recently active pools (exact unless more than
        ``FEED_POOLS`` pools had events among the latest ``FEED_MAX``), newest first."""
        active = sorted(newest, key=lambda p: position(newest[p]), reverse=True)[:FEED_POOLS]
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in active:
                pipe.xrevrange(self.keys.stream(pool), count=FEED_MAX)
            replies = cast("list[list[Entry]]", await pipe.execute())
        feed = [feed_item(pool, e) for pool, entries in zip(active, replies, strict=True) for e in entries]
        feed.sort(key=lambda item: position(item["pos"]), reverse=True)
        return feed[:FEED_MAX]

    async def snapshot(self, now: int, title: str) -> dict[str, Any]:
        """Everything the page needs to draw itself, and ``cursor``: the log position to follow
        from (live updates after it complete the picture; some may repeat what it shows)."""
        heads, checkpoints = await self._heads()
        newest: dict[str, str] = {}
        lagging = []
        for pool, entries, checkpoint in zip(self.pools, heads, checkpoints, strict=True):
            if entries:
                newest[pool] = last = text(entries[0][0])
                if not checkpoint or position(checkpoint) < position(last):
                    lagging.append(checkpoint or "0-0")
        # A pool whose status lags its log: follow from its checkpoint, so its missing events come live.
        top = max(newest.values(), key=position, default="0-0")
        cursor = min(lagging, key=position) if lagging else top
        feed = await self._feed(newest)
        rows, day = await asyncio.gather(self.rows(self.pools), self.stats.day(self.pools, day_of(now)))
        today = {
            kind: _duration(combine(getattr(v, kind) for v in day.values())) for kind in ("clone", "boot")
        }
        return {
            "title": title,
            "now": now,
            "cursor": cursor,
            "pools": self.pools,
            "rows": [rows[p] for p in self.pools],
            "today": today,
            "feed": feed,
        }

    async def series(self, window: str, now: int, since: int | None) -> dict[str, Any]:
        """History of every pool: ``hour`` (60 minute points) or ``day`` (24 hour points), only
        from ``since`` (ms) on when given. Per pool ``[ready…], [running…]``; totals across pools of
        checkouts, checkout failures and the average clone and boot seconds of each point."""
        res = self.history.history.hour if window == "day" else self.history.history.minute
        count = 24 if window == "day" else 60
        if since is not None:
            count = max(1, min(count, now // res.unit_ms - since // res.unit_ms + 1))
        series = await self.history.series(self.pools, res, now, count)
        first = next(iter(series.values()), None)
        return {
            "window": window,
            "start": first.start if first else (now // res.unit_ms - count + 1) * res.unit_ms,
            "step": res.unit_ms,
            "pools": {p: [s.ready, s.running] for p, s in series.items()},
            **_totals(list(series.values()), count),
        }


def _duration(stats: Any) -> dict[str, Any]:
    average = round(stats.total / stats.count, 1) if stats.count else 0
    return {"count": stats.count, "average": average, "min": round(stats.min, 1), "max": round(stats.max, 1)}


def _totals(series: list[PoolSeries], count: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"checkouts": [], "failures": [], "clone": [], "boot": []}
    for i in range(count):
        clones = sum(s.clones[i] for s in series)
        boots = sum(s.boots[i] for s in series)
        out["checkouts"].append(sum(s.checkouts[i] for s in series))
        out["failures"].append(sum(s.failures[i] for s in series))
        out["clone"].append(round(sum(s.clone_s[i] for s in series) / clones, 1) if clones else None)
        out["boot"].append(round(sum(s.boot_s[i] for s in series) / boots, 1) if boots else None)
    return out
