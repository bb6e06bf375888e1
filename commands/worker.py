"""Competing workers over the pool streams: consumer group ``workers``, at-least-once delivery,
reclaim from dead workers (XPENDING/XCLAIM after an idle time), dead letters after N deliveries.
An item leaves the pending list only when a handler finished it or it went to the dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Sequence
from typing import Any, cast

from events import Keys, decode_entry
from events.bell import Bell, Listener
from events.streams import Entry, RedisClient, pool_of_stream, text, xreadgroup_each

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
        bell: the process's bell, shared by its readers.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        handlers: Handlers,
        pools: Sequence[str],
        *,
        consumer: str,
        concurrency: int = 10,
        reclaim_idle_ms: int = 60_000,
        max_deliveries: int = 5,
        bell: Bell | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.handlers = handlers
        self.pools = list(pools)
        self.consumer = consumer
        self.concurrency = concurrency
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_deliveries = max_deliveries
        self.bell = bell
        """The process's bell (see ``events.bell``); ``run`` makes its own when ``None``."""
        self._inflight: dict[tuple[str, bytes], asyncio.Task[None]] = {}
        self._ready = False

    async def setup(self) -> None:
        """Create the group on every stream, from the start of the log (existing work is not lost)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in self.pools:
                pipe.xgroup_create(self.keys.stream(pool), GROUP, id="0", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    @property
    def busy(self) -> int:
        return len(self._inflight)

    async def step(self, block_ms: int | None = None) -> int:
        """Take up to the free slots' worth of new entries of every pool and start handling them
        (with every slot busy, wait up to ``block_ms`` for one to free up)."""
        if self.concurrency - len(self._inflight) <= 0:
            await self._wait_for_a_slot(block_ms)
            return 0
        started, _ = await self._read([self.keys.stream(p) for p in self.pools])
        return started

    async def _wait_for_a_slot(self, block_ms: int | None) -> None:
        # bounded, so run() keeps heartbeating (and reclaiming) while every slot is busy
        timeout = None if block_ms is None else block_ms / 1000
        await asyncio.wait(
            list(self._inflight.values()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )

    async def _read(self, streams: Collection[str]) -> tuple[int, set[str]]:
        """Read new entries of ``streams`` (as many as there are free slots) and start the wanted
        ones; acknowledge the others. Returns how many started, and the streams to read again
        (a full batch, or not read for want of slots)."""
        free = self.concurrency - len(self._inflight)
        if free <= 0 or not streams:
            return 0, set(streams)
        ordered = sorted(streams)
        chosen, again = ordered[:free], set(ordered[free:])
        count = max(1, free // len(chosen))
        started, skip = 0, []
        replies = await xreadgroup_each(self.redis, GROUP, self.consumer, chosen, count)
        for stream, entries in zip(chosen, replies, strict=True):
            if isinstance(entries, Exception):  # e.g. NOGROUP: the stream was deleted
                log.warning("reading %s failed (%s); setting its group up again", stream, entries)
                self._ready = False
                again.add(stream)
                continue
            if len(entries) >= count:
                again.add(stream)
            pool = pool_of_stream(stream)
            for position, fields in entries:
                if self.handlers.wants(text(fields.get(b"type"))):
                    self._start(pool, position, fields, 1)
                    started += 1
                else:
                    skip.append((stream, position))
        await self._ack(skip)
        return started, again

    async def _ack(self, entries: Sequence[tuple[str, bytes]]) -> None:
        if not entries:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, position in entries:
                pipe.xack(stream, GROUP, position)
            await pipe.execute()

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
        if not self._inflight:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool, position in list(self._inflight):
                pipe.xclaim(self.keys.stream(pool), GROUP, self.consumer, 0, [position], justid=True)
            await pipe.execute(raise_on_error=False)  # an entry deleted meanwhile: nothing to keep

    async def _idle_entries(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Per pool, the pending entries idle longer than ``reclaim_idle_ms`` (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in self.pools:
                pipe.xpending_range(
                    self.keys.stream(pool), GROUP, min="-", max="+", count=100, idle=self.reclaim_idle_ms
                )
            replies = await pipe.execute(raise_on_error=False)
        return [(pool, r) for pool, r in zip(self.pools, replies, strict=True) if isinstance(r, list) and r]

    async def reclaim(self) -> int:
        """Take over entries idle longer than ``reclaim_idle_ms``; dead-letter the hopeless ones."""
        taken = 0
        for pool, pending in await self._idle_entries():
            stream = self.keys.stream(pool)
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
        """Consume until ``stop`` is set: read the streams the bell rang (see ``events.bell``);
        heartbeat and reclaim every third of the reclaim idle time."""
        block_ms = max(1, min(block_ms, self.reclaim_idle_ms // 3))  # heartbeats must beat the idle time
        bell = self.bell or Bell(self.redis, self.keys.bell())
        listener = bell.listen(self.keys.stream(p) for p in self.pools)
        try:
            await self._follow(stop, listener, block_ms)
        finally:
            await bell.forget(listener)
            self.handlers.stop()
            for task in list(self._inflight.values()):
                task.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _follow(self, stop: asyncio.Event, listener: Listener, block_ms: int) -> None:
        loop = asyncio.get_running_loop()
        next_maintenance = loop.time()
        while not stop.is_set():
            try:
                if not self._ready:  # Redis may not answer yet, or a stream was deleted
                    await self.setup()
                    self._ready = True
                if loop.time() >= next_maintenance:
                    await self.heartbeat()
                    await self.reclaim()
                    next_maintenance = loop.time() + self.reclaim_idle_ms / 3000
                if self.concurrency - len(self._inflight) <= 0:
                    await self._wait_for_a_slot(block_ms)
                    continue
                dirty = await listener.wait(min(block_ms / 1000, max(0.0, next_maintenance - loop.time())))
                try:
                    _, again = await self._read(dirty)
                except BaseException:
                    listener.again(dirty)  # read them again: nothing was lost, only not yet read
                    raise
                listener.again(again)
            except Exception:
                log.exception("worker step failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
