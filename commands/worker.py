"""Competing workers over the pool streams: consumer group ``workers``, at-least-once delivery,
reclaim from dead workers (XPENDING/XCLAIM after an idle time), dead letters after N deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from events import Keys, decode_entry
from events.streams import Entry, pool_of_stream, text, xreadgroup

from .handlers import Handlers

__all__ = ["Worker"]

log = logging.getLogger(__name__)

GROUP = "workers"


class Worker:
    """One worker process's share of the work.

    Args:
        redis: client (bytes replies).
        keys: key names.
        handlers: what to do for each event type.
        pools: the pool streams to consume.
        consumer: this process's unique consumer name.
        concurrency: how many entries are handled at once (vmpooler's task_limit).
        reclaim_idle_ms: an entry pending this long with a silent consumer is taken over.
        max_deliveries: after this many deliveries an entry goes to the pool's dead-letter stream.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        handlers: Handlers,
        pools: Sequence[str],
        *,
        consumer: str,
        concurrency: int = 10,
        reclaim_idle_ms: int = 60_000,
        max_deliveries: int = 5,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.handlers = handlers
        self.pools = list(pools)
        self.consumer = consumer
        self.concurrency = concurrency
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_deliveries = max_deliveries
        self._inflight: dict[tuple[str, bytes], asyncio.Task[None]] = {}

    async def setup(self) -> None:
        """Create the group on every stream, from the start of the log (existing work is not lost)."""
        for pool in self.pools:
            try:
                await self.redis.xgroup_create(self.keys.stream(pool), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @property
    def busy(self) -> int:
        return len(self._inflight)

    async def step(self, block_ms: int | None = None) -> int:
        """Take up to the free slots' worth of new entries and start handling them."""
        if not self.pools:  # nothing to read (XREADGROUP refuses an empty list of streams)
            await asyncio.sleep((block_ms or 0) / 1000)
            return 0
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            # bounded, so run() keeps heartbeating (and reclaiming) while every slot is busy
            timeout = None if block_ms is None else block_ms / 1000
            await asyncio.wait(
                list(self._inflight.values()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            return 0
        streams = {self.keys.stream(p): ">" for p in self.pools}
        started = 0
        for stream, entries in await xreadgroup(
            self.redis, GROUP, self.consumer, streams, count=free, block=block_ms
        ):
            pool = pool_of_stream(stream)
            skip = []
            for position, fields in entries:
                if self.handlers.wants(text(fields.get(b"type"))):
                    self._start(pool, position, fields, 1)
                    started += 1
                else:
                    skip.append(position)
            if skip:
                await self.redis.xack(stream, GROUP, *skip)
        return started

    def _start(self, pool: str, position: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        task = asyncio.create_task(self._run(pool, position, fields, deliveries))
        self._inflight[(pool, position)] = task

    async def _run(self, pool: str, position: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        try:
            await self.handlers.handle(decode_entry(pool, position, fields), deliveries)
            await self.redis.xack(self.keys.stream(pool), GROUP, position)
        except asyncio.CancelledError:
            raise
        except Exception:  # left pending: another delivery (or the dead-letter stream) takes it
            log.exception("handling %s %s failed", pool, position)
        finally:
            self._inflight.pop((pool, position), None)

    async def heartbeat(self) -> None:
        """Reset the idle time of entries we are still working on, so nobody reclaims them."""
        for pool, position in list(self._inflight):
            with contextlib.suppress(ResponseError):
                await self.redis.xclaim(
                    self.keys.stream(pool), GROUP, self.consumer, 0, [position], justid=True
                )

    async def reclaim(self) -> int:
        """Take over entries idle longer than ``reclaim_idle_ms``; dead-letter the hopeless ones."""
        taken = 0
        for pool in self.pools:
            stream = self.keys.stream(pool)
            pending = cast(
                list[dict[str, Any]],
                await self.redis.xpending_range(
                    stream, GROUP, min="-", max="+", count=100, idle=self.reclaim_idle_ms
                ),
            )
            for p in pending:
                position = cast(bytes, p["message_id"])
                if (pool, position) in self._inflight:
                    continue
                claimed = cast(
                    list[Entry],
                    await self.redis.xclaim(stream, GROUP, self.consumer, self.reclaim_idle_ms, [position]),
                )
                if not claimed:
                    # Another worker claimed it since XPENDING (its idle time is reset), or Redis 7
                    # dropped a deleted entry from the pending list itself: either way not ours.
                    continue
                if not claimed[0][1]:
                    await self.redis.xack(stream, GROUP, position)  # Redis 6.2: deleted from the stream
                    continue
                fields = claimed[0][1]
                deliveries = int(p["times_delivered"]) + 1
                if deliveries > self.max_deliveries:
                    await self._dead_letter(pool, position, fields, deliveries - 1)
                    continue
                if self.handlers.wants(text(fields.get(b"type"))):
                    self._start(pool, position, fields, deliveries)
                    taken += 1
                else:
                    await self.redis.xack(stream, GROUP, position)
        return taken

    async def _dead_letter(
        self, pool: str, position: bytes, fields: dict[bytes, bytes], deliveries: int
    ) -> None:
        log.error("dead-lettering %s %s after %d deliveries", pool, position, deliveries)
        letter: dict[Any, Any] = {**fields, b"position": position, b"group": GROUP, b"deliveries": deliveries}
        await self.redis.xadd(self.keys.dead_letters(pool), letter)
        await self.redis.xack(self.keys.stream(pool), GROUP, position)

    async def drain(self) -> None:
        """Wait until every started handler has finished."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    async def run(self, stop: asyncio.Event, block_ms: int = 500) -> None:
        """Consume until ``stop`` is set; heartbeat and reclaim every third of the reclaim idle time."""
        block_ms = max(1, min(block_ms, self.reclaim_idle_ms // 3))  # heartbeats must beat the idle time
        loop = asyncio.get_running_loop()
        next_maintenance = loop.time()
        ready = False
        while not stop.is_set():
            try:
                if not ready:  # Redis may not answer yet
                    await self.setup()
                    ready = True
                if loop.time() >= next_maintenance:
                    await self.heartbeat()
                    await self.reclaim()
                    next_maintenance = loop.time() + self.reclaim_idle_ms / 3000
                await self.step(block_ms=block_ms)
            except Exception:
                log.exception("worker step failed; retrying")
                await asyncio.sleep(1)
        self.handlers.stop()
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
