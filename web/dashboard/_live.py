"""Live updates: one reader of the pool logs per process, fanned out to every open dashboard.

A single task follows every pool stream with XREAD (so a hundred open dashboards cost one blocked
Redis connection, not a hundred). Each read becomes one message: the new events (envelopes only)
and the current rows of the pools they touched, read once the status projection has folded them.
The message is encoded once and queued to each subscriber; its SSE ``id`` is the position of its
newest event. A browser that reconnects sends that id as ``Last-Event-ID`` and first gets the
events after it from the log (positions are Redis's clock, so one id orders events of all pools),
then the live messages. A subscriber that falls behind gets ``resync`` and reloads the snapshot.

Bounds, so that no number of clients exhausts the process or its Redis connections: at most
``max_streams`` streams at once (:meth:`Hub.admit`; the route answers 503 beyond), and at most
:data:`BACKLOG_READS` backlog reads at once (the others wait their turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import cast

import msgspec
from redis.asyncio import Redis

from events import Keys
from events.streams import Entry, pool_of_stream, position, text, xread

from ._data import Snapshots, feed_item

__all__ = ["BACKLOG_READS", "Hub", "sse_stream"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
RESYNC = b"event: resync\ndata: {}\n\n"
KEEPALIVE = b": ka\n\n"
_BACKLOG_MAX = 2000
BACKLOG_READS = 4
"""Backlog reads (one pipelined XRANGE over the pools, then one rows read) in flight at once."""
_RESERVED_S = 5.0
"""How long an admitted stream that has not started yet holds its place (a client that went away
between the answer's headers and its body never starts its stream)."""


class Hub:
    """The process's follower of the pool logs, started by the first subscriber and stopped
    after the last one leaves.

    Args:
        redis: client (bytes replies).
        keys: key names.
        snapshots: reads the rows of the pools a message touches.
        block_ms: longest XREAD wait (the follower notices it has no subscribers left after it).
        queue_max: messages a subscriber may have waiting before it is told to resync.
        max_streams: streams served at once (admitted, started or not).
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        snapshots: Snapshots,
        *,
        block_ms: int = 5000,
        queue_max: int = 256,
        max_streams: int = 200,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.snapshots = snapshots
        self.block_ms = block_ms
        self.queue_max = queue_max
        self.max_streams = max_streams
        self._reserved: dict[object, float] = {}  # admitted, not started: ticket -> when
        self._backlog_slots = asyncio.Semaphore(BACKLOG_READS)
        self._subscribers: set[asyncio.Queue[tuple[str, bytes] | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._following = asyncio.Event()

    def admit(self) -> object | None:
        """A ticket for one more stream (pass it to :func:`sse_stream`), or ``None`` when
        ``max_streams`` are served already."""
        now = time.monotonic()
        for ticket, at in list(self._reserved.items()):
            if now - at > _RESERVED_S:
                del self._reserved[ticket]
        if len(self._subscribers) + len(self._reserved) >= self.max_streams:
            return None
        ticket = object()
        self._reserved[ticket] = now
        return ticket

    def subscribe(self, ticket: object | None = None) -> asyncio.Queue[tuple[str, bytes] | None]:
        """A queue of ``(id, encoded message)``; ``None`` means "you missed some: resync"."""
        self._reserved.pop(ticket, None)
        queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(self.queue_max)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._following = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._follow())
        return queue

    async def following(self) -> None:
        """Wait until the follower has its starting positions: every event appended after this
        returns reaches the subscribers (so a backlog read after it leaves no gap)."""
        await self._following.wait()

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, bytes] | None]) -> None:
        self._subscribers.discard(queue)

    async def message(self, entries: list[tuple[str, Entry]]) -> tuple[str, bytes]:
        """One message for ``(pool, entry)`` pairs: the events in log order and the touched rows."""
        entries.sort(key=lambda pe: position(text(pe[1][0])))
        pools = sorted({pool for pool, _ in entries})
        rows = await self.snapshots.rows(pools, fresh_within=0.5)
        events = [feed_item(pool, e) for pool, e in entries]
        return events[-1]["pos"], _encoder.encode({"events": events, "rows": rows})

    async def _heads(self) -> dict[str, str]:
        """Stream key -> its newest position (``0-0`` if empty)."""
        streams = [self.keys.stream(p) for p in self.snapshots.pools]
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrevrange(stream, count=1)
            replies = await pipe.execute()
        return {
            stream: text(last[0][0]) if last else "0-0" for stream, last in zip(streams, replies, strict=True)
        }

    async def _follow(self) -> None:
        cursor: dict[str, str] | None = None
        while self._subscribers:
            try:
                if cursor is None:
                    cursor = await self._heads()
                    self._following.set()
                reply = await xread(self.redis, cursor, count=1000, block=self.block_ms)
                if not reply:
                    continue
                batch: list[tuple[str, Entry]] = []
                for stream, entries in reply:
                    cursor[stream] = text(entries[-1][0])
                    batch += [(pool_of_stream(stream), e) for e in entries]
                self._publish(await self.message(batch))
            except Exception:  # a Redis blip: keep following from the cursor
                log.exception("dashboard live feed failed; retrying")
                await asyncio.sleep(1)

    def _publish(self, item: tuple[str, bytes]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:  # too slow: drop what it has and tell it to reload
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    async def backlog(self, since: str) -> tuple[list[tuple[str, bytes]], bool]:
        """Messages for every event after ``since`` (a stream position), and whether they are
        complete (False: too many; the client should reload the snapshot instead)."""
        pools = self.snapshots.pools
        per_pool = max(8, _BACKLOG_MAX // max(1, len(pools)))  # bounds the read whatever ``since`` is
        async with self._backlog_slots:  # a flood of reconnecting clients waits here, not on Redis
            async with self.redis.pipeline(transaction=False) as pipe:
                for pool in pools:
                    pipe.xrange(self.keys.stream(pool), min="(" + since, count=per_pool)
                replies = cast("list[list[Entry]]", await pipe.execute())
            if any(len(entries) >= per_pool for entries in replies):
                return [], False
            batch = [(pool, e) for pool, entries in zip(pools, replies, strict=True) for e in entries]
            if not batch:
                return [], True
            return [await self.message(batch)], True

    async def stop(self) -> None:
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _frame(event_id: str, payload: bytes) -> bytes:
    return b"id: " + event_id.encode() + b"\nevent: update\ndata: " + payload + b"\n\n"


async def sse_stream(
    hub: Hub, since: str | None, keepalive_s: float = 15.0, ticket: object | None = None
) -> AsyncIterator[bytes]:
    """The SSE body of one dashboard: backlog after ``since`` (if given), then live messages.
    ``ticket``: from :meth:`Hub.admit`."""
    queue = hub.subscribe(ticket)
    try:
        yield b"retry: 2000\n\n"
        floor = (0, 0)
        if since:
            await hub.following()
            messages, complete = await hub.backlog(since)
            if not complete:
                yield RESYNC
            for event_id, payload in messages:
                floor = max(floor, position(event_id))
                yield _frame(event_id, payload)
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                yield KEEPALIVE
                continue
            if item is None:
                yield RESYNC
            elif position(item[0]) > floor:  # else the backlog already had it
                yield _frame(*item)
    finally:
        hub.unsubscribe(queue)
