"""Audits read the log itself: per VM, per pool, per time range, or following new events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from redis.exceptions import RedisError

from events import Keys, Recorded, decode_entry
from events.archive import check_whole, read_segments
from events.bell import Bell, read_rung
from events.streams import RedisClient, pool_of_stream, position, text, xrange

from .read import ReadModels
from .vm_detail import VmDetail

__all__ = ["AuditLog"]


def _min_id(since_ms: int | None) -> str:
    return "-" if since_ms is None else f"{since_ms}-0"


def _max_id(until_ms: int | None) -> str:
    return "+" if until_ms is None else f"{until_ms}-18446744073709551615"


def _within(ms: int, since_ms: int | None, until_ms: int | None) -> bool:
    return (since_ms is None or ms >= since_ms) and (until_ms is None or ms <= until_ms)


class AuditLog:
    """Reads events from the pool streams. Time bounds are the streams' entry times (Redis's clock).

    Args:
        redis: client (bytes replies).
        keys: key names.
    """

    def __init__(self, redis: RedisClient, keys: Keys, archive: Path | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.reads = ReadModels(redis, keys)
        self.archive = archive
        """Where ``vmpooler archive`` put the archived part of the logs (``None``: audit what is in
        Redis only)."""

    async def _archived(self, pool: str) -> str:
        """How far ``pool``'s log is archived, if it is and the archive is given (else ``""``)."""
        if self.archive is None:
            return ""
        return await check_whole(self.redis, self.keys, pool, self.archive)

    async def pools(self) -> list[str]:
        """Every pool that has a stream, sorted."""
        return sorted(text(p) for p in await self.redis.smembers(self.keys.pools()))

    async def for_pool(
        self, pool: str, since_ms: int | None = None, until_ms: int | None = None, batch: int = 1000
    ) -> AsyncIterator[Recorded]:
        """Events of one pool in log order, optionally within [since, until] (the archived ones
        first, when the archive is given).

        Raises:
            ArchiveError: the archive given does not reach as far as the stream was trimmed.
        """
        start, stop = _min_id(since_ms), _max_id(until_ms)
        through = await self._archived(pool)
        if through and self.archive is not None:
            for entries in read_segments(self.archive, pool):
                for pos, fields in entries:
                    at = position(pos.decode())
                    if at <= position(through) and _within(at[0], since_ms, until_ms):
                        yield decode_entry(pool, pos, fields)
            if since_ms is None or position(start) <= position(through):
                start = f"({through}"
        while entries := await xrange(self.redis, self.keys.stream(pool), min=start, max=stop, count=batch):
            for pos, fields in entries:
                yield decode_entry(pool, pos, fields)
            start = "(" + entries[-1][0].decode()

    async def for_vm(self, vm: str) -> list[Recorded]:
        """Every event about one VM, oldest first: the VM detail projection's index of positions,
        plus the log after that projection's checkpoint (so a lagging projection loses nothing)."""
        pool = await self.reads.pool_of(vm)
        if pool is None:
            return []
        stream = self.keys.stream(pool)
        out = []
        wanted = await self.reads.vm_positions(pool, vm)
        through = await self._archived(pool)
        if through and self.archive is not None and wanted and position(wanted[0]) <= position(through):
            archived = set(wanted)
            for entries in read_segments(self.archive, pool):
                out += [decode_entry(pool, pos, f) for pos, f in entries if pos.decode() in archived]
        for at in wanted:
            for pos, fields in await xrange(self.redis, stream, min=at, max=at):
                out.append(decode_entry(pool, pos, fields))
        checkpoint = text(await self.redis.get(f"{self.keys.read_model(pool, VmDetail.name)}:checkpoint"))
        start = "(" + checkpoint if checkpoint else "-"
        while entries := await xrange(self.redis, stream, min=start, count=1000):
            out += [decode_entry(pool, pos, f) for pos, f in entries if f.get(b"vm") == vm.encode()]
            start = "(" + entries[-1][0].decode()
        return out

    async def follow(
        self,
        pools: Sequence[str],
        since_ms: int | None = None,
        bell: Bell | None = None,
        *,
        give_up_after_s: float = 30.0,
        check_every_s: float = 5.0,
    ) -> AsyncIterator[Recorded]:
        """Events of ``pools`` from ``since_ms`` on (or only new ones when ``None``), then new ones
        as they are appended (read when the bell rings, see ``events.bell``; a ``Bell`` of its own
        when ``bell`` is ``None``); never ends by itself. A Redis restart loses nothing (the cursors
        are ours): while no bell rings Redis is asked every ``check_every_s``, and once it has not
        answered for ``give_up_after_s`` the last error is raised.

        Raises:
            RedisError: Redis stayed out of reach for ``give_up_after_s``.
        """
        cursors = await self._starts(pools, since_ms)
        bell = bell or Bell(self.redis, self.keys.bell())
        listener = bell.listen(cursors)
        down_since: float | None = None
        check_every_s = min(check_every_s, max(0.5, give_up_after_s / 4))
        try:
            while True:
                try:
                    rung = await read_rung(self.redis, listener, cursors, timeout_s=check_every_s)
                    if not rung:
                        await self.redis.ping()
                    down_since = None
                except RedisError:
                    now = time.monotonic()
                    down_since = now if down_since is None else down_since
                    if now - down_since >= give_up_after_s:
                        raise
                    await asyncio.sleep(min(1.0, check_every_s))
                    continue
                for stream, entries in rung:
                    pool = pool_of_stream(stream)
                    for pos, fields in entries:
                        yield decode_entry(pool, pos, fields)
        finally:
            await bell.forget(listener)

    async def _starts(self, pools: Sequence[str], since_ms: int | None) -> dict[str, str]:
        """Stream key -> the position to follow it after: its last entry (``since_ms`` ``None``), or
        just before ``since_ms``."""
        streams = [self.keys.stream(pool) for pool in pools]
        if since_ms is not None:
            return dict.fromkeys(streams, f"{since_ms - 1}-18446744073709551615" if since_ms > 0 else "")
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrevrange(stream, count=1)
            lasts = await pipe.execute()
        return {s: last[0][0].decode() if last else "" for s, last in zip(streams, lasts, strict=True)}
