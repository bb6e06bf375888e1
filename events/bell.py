"""The bell: how every follower of the logs learns which streams changed, on one Redis or a Cluster.

Each decision-script call that appends entries publishes each stream key it appended to on
``Keys.bell()`` (classic Pub/Sub reaches subscribers on any node of a Cluster). One :class:`Bell`
per process subscribes once and marks those streams dirty in every :class:`Listener` that follows
them; a reader waits on its listener, then reads just the dirty streams with non-blocking reads
(pipelined: one round trip per node). A bell lost while the subscription was down is covered by a
sweep (every stream dirty) when the subscription (re)starts, and by a slow safety sweep. So an idle
process costs next to nothing however many pools it follows, and the work is proportional to what
changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from .streams import Entry, RedisClient, text, xrange_each

__all__ = ["Bell", "Listener", "read_rung"]

log = logging.getLogger(__name__)

_QUIET_S = 5.0
"""A lost subscription is logged once it has been lost this long (fail-overs and restarts are shorter)."""


class Listener:
    """One reader's view of the bell: which of its streams may have new entries.

    A reader calls :meth:`wait`, reads the streams it returns, and calls :meth:`again` for those
    it did not read to the end (a full batch), so they are read in the next round without a bell.
    """

    def __init__(self, streams: Iterable[str]) -> None:
        self.streams = set(streams)
        self._dirty = set(self.streams)  # a first full read
        self._woken = asyncio.Event()
        self._woken.set()

    def ring(self, stream: str) -> None:
        if stream in self.streams:
            self._dirty.add(stream)
            self._woken.set()

    def ring_all(self) -> None:
        self.again(self.streams)

    def again(self, streams: Iterable[str]) -> None:
        """Read ``streams`` again in the next round (more entries are waiting there)."""
        self._dirty.update(s for s in streams if s in self.streams)
        if self._dirty:
            self._woken.set()

    def follow(self, streams: Iterable[str]) -> None:
        """Also follow ``streams`` (read them once at once)."""
        new = set(streams) - self.streams
        self.streams |= new
        self.again(new)

    async def wait(self, timeout_s: float | None = None) -> set[str]:
        """The streams rung since the last call (waiting up to ``timeout_s`` for one; ``set()``
        when none rang)."""
        if not self._dirty:
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout_s)
        dirty, self._dirty = self._dirty, set()
        return dirty


class Bell:
    """One process's subscription to the bell channel, shared by every reader of the process: it
    runs while anyone listens.

    Args:
        redis: client (a Cluster client subscribes on one of its nodes).
        channel: ``Keys.bell()``.
        sweep_s: every listener reads all its streams this often, in case a bell was lost.
        retry_s: pause before subscribing again after the subscription failed.
    """

    def __init__(
        self, redis: RedisClient, channel: str, *, sweep_s: float = 30.0, retry_s: float = 1.0
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.sweep_s = sweep_s
        self.retry_s = retry_s
        self.listeners: list[Listener] = []
        self.subscribed = asyncio.Event()
        """Set while the subscription is up (tests wait on it)."""
        self._task: asyncio.Task[None] | None = None
        self._lost_at: float | None = None
        self._warned = False

    def listen(self, streams: Iterable[str]) -> Listener:
        """A listener for ``streams``; it starts with all of them dirty. The first listener starts
        the subscription (in the running event loop)."""
        listener = Listener(streams)
        self.listeners.append(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return listener

    async def forget(self, listener: Listener) -> None:
        """Stop telling ``listener``; the last one to go ends the subscription."""
        with contextlib.suppress(ValueError):
            self.listeners.remove(listener)
        if not self.listeners and self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            # bounded: a client closing a subscription to a node that went away must not hold
            # up whoever stops listening (a CLI shutting down, say)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 2)

    def _sweep(self) -> None:
        for listener in self.listeners:
            listener.ring_all()

    async def _run(self) -> None:
        """Deliver bells until cancelled, subscribing again (and sweeping) after any failure. An
        outage is logged once, when it has lasted ``_QUIET_S`` (a fail-over or restart shorter than
        that is routine), and its end once more."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._subscribed()
            except Exception as exc:  # Redis down or failing over: sweep once we are back
                self._lost_at = loop.time() if self._lost_at is None else self._lost_at
                if not self._warned and loop.time() - self._lost_at >= _QUIET_S:
                    log.warning("bell subscription lost (%s); subscribing again until Redis answers", exc)
                    self._warned = True
            self.subscribed.clear()
            await asyncio.sleep(self.retry_s)

    async def _subscribed(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            loop = asyncio.get_running_loop()
            next_sweep = loop.time() + self.sweep_s
            while True:
                message = await pubsub.get_message(timeout=max(0.0, next_sweep - loop.time()))
                if message is not None:
                    self._deliver(message["type"], message["data"])
                if loop.time() >= next_sweep:
                    self._sweep()
                    next_sweep = loop.time() + self.sweep_s
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1)

    def _deliver(self, kind: bytes | str, data: bytes | str | int) -> None:
        if text(kind) == "subscribe":  # (re)subscribed: bells may have been lost meanwhile
            self.subscribed.set()
            if self._warned:
                log.warning("bell subscription is back")
            self._lost_at, self._warned = None, False
            self._sweep()
        elif text(kind) == "message" and not isinstance(data, int):
            stream = text(data)
            for listener in self.listeners:
                listener.ring(stream)


async def read_rung(
    redis: RedisClient,
    listener: Listener,
    cursors: dict[str, str],
    *,
    count: int = 1000,
    timeout_s: float | None = None,
) -> list[tuple[str, list[Entry]]]:
    """Wait (up to ``timeout_s``) for bells on ``listener``, then read what the rung streams have
    after their cursors (one round trip) and move the cursors past it: how a follower of the logs
    that keeps its own cursors (audit ``--follow``, the dashboard's live feed) reads.

    Args:
        redis: client.
        listener: from :meth:`Bell.listen` over the keys of ``cursors``.
        cursors: stream key -> the last position seen (``""`` or ``0-0``: from the start); updated.
        count: most entries per stream per call (a stream with more is read again next call).
        timeout_s: how long to wait for a bell (``None``: until one rings).

    Returns:
        (stream key, entries) of the streams that had new entries.

    Raises:
        RedisError: a read failed (its streams are read again next call).
    """
    dirty = sorted(s for s in await listener.wait(timeout_s) if s in cursors)
    replies = await xrange_each(redis, [(s, cursors[s]) for s in dirty], count)
    out, error = [], None
    for stream, entries in zip(dirty, replies, strict=True):
        if isinstance(entries, Exception):
            listener.again([stream])
            error = error or entries
        elif entries:
            cursors[stream] = entries[-1][0].decode()
            out.append((stream, entries))
            if len(entries) >= count:
                listener.again([stream])
    if error is not None and not out:
        raise error
    return out
