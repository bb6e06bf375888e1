"""Runs projections over pool streams: one active reader per (projection, stream) by lease, reading
the stream itself from the projection's checkpoint, which is written atomically with the read-model
change, so every entry is applied once, in order, whatever replies are lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from redis.exceptions import ResponseError

from events import Keys, Recorded, decode_entry
from events.archive import check_whole, log_batches
from events.bell import Bell, Listener
from events.lease import Lease
from events.streams import Entry, RedisClient, pool_of_stream, position, text, xrange_each

from ._base import Projection
from ._tx import Applied, Checkpoint, Tx, apply_script

__all__ = ["ProjectionRunner"]


log = logging.getLogger(__name__)

_RENEW_AT_ONCE = 256


class ProjectionRunner:
    """Folds pool streams into read models.

    Args:
        redis: client (bytes replies).
        keys: key names of this installation.
        projections: the read models to maintain.
        pools: the pool streams to follow.
        consumer: this process's name (unique per process): the lease holder.
        lease_ms: how long a lease on a (projection, stream) lasts without renewal.
        batch: entries per read.
        bell: the process's bell, shared by its readers.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        projections: Sequence[Projection],
        pools: Sequence[str],
        *,
        consumer: str,
        lease_ms: int = 10_000,
        batch: int = 200,
        bell: Bell | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.projections = list(projections)
        self.pools = list(pools)
        self.consumer = consumer
        self.lease_ms = lease_ms
        self.batch = batch
        self._apply = apply_script(redis)
        self._lease = Lease(redis, consumer, lease_ms)
        self._held: dict[str, set[str]] = {p.name: set() for p in self.projections}
        self._read_from: dict[tuple[str, str], str] = {}
        """(projection, pool) -> the checkpoint as this runner last knew it; absent: ask Redis."""
        self.bell = bell
        """The process's bell (see ``events.bell``); ``run`` makes its own when ``None``."""
        self._listener: Listener | None = None

    def group(self, projection: Projection) -> str:
        """The projection's consumer group: nothing reads through it; ``apply.lua`` keeps it at the
        checkpoint so XINFO shows the projection's lag and the archiver its position."""
        return f"proj:{projection.name}"

    def checkpoint_key(self, projection: Projection, pool: str) -> str:
        return f"{projection.owned_prefix(self.keys, pool)}:checkpoint"

    def _at(self, projection: Projection, pool: str) -> Checkpoint:
        group = self.group(projection)
        key, lease = self.checkpoint_key(projection, pool), self.keys.lease(pool, group)
        return Checkpoint(key, lease, self.keys.stream(pool), group)

    async def _acquire(self, projection: Projection, pool: str) -> bool:
        """Take or renew the lease; on a fresh take, read from the checkpoint again."""
        held = self._held[projection.name]
        if not await self._lease.hold(self.keys.lease(pool, self.group(projection))):
            held.discard(pool)
            return False
        if pool in held:
            return True
        self._read_from[(projection.name, pool)] = await self._mark(projection, pool)
        held.add(pool)
        if self._listener is not None:
            self._listener.again([self.keys.stream(pool)])
        return True

    async def _mark(self, projection: Projection, pool: str) -> str:
        """Point the projection's group at the checkpoint, and acknowledge what an older version of
        this runner (which read through the group) left pending, so nothing holds the archive back.
        Returns the checkpoint (``""``: none yet)."""
        stream, group = self.keys.stream(pool), self.group(projection)
        checkpoint = text(await self.redis.get(self.checkpoint_key(projection, pool)))
        try:
            await self.redis.xgroup_create(stream, group, id=checkpoint or "0-0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            await self.redis.xgroup_setid(stream, group, id=checkpoint or "0-0")
        while claimed := await self.redis.xautoclaim(
            stream, group, self.consumer, min_idle_time=0, start_id="0-0", count=500, justid=True
        ):
            await self.redis.xack(stream, group, *claimed)
        return checkpoint

    async def renew(self) -> None:
        """Take or renew every (projection, stream) lease, a few hundred at once: one after the other,
        a pass over 1,000 pools took longer than a lease lasts, and leases lapsed while idle."""
        due = [(p, pool) for p in self.projections for pool in self.pools]
        for start in range(0, len(due), _RENEW_AT_ONCE):
            await asyncio.gather(*(self._acquire(p, pool) for p, pool in due[start : start + _RENEW_AT_ONCE]))

    async def step(self) -> int:
        """Read and apply one batch per held stream of every projection; returns entries applied."""
        applied, _, _ = await self._read({self.keys.stream(p) for p in self.pools})
        return applied

    async def _read(self, streams: set[str]) -> tuple[int, set[str], set[str]]:
        """Read one batch after the checkpoint of every held (projection, stream) among ``streams``
        (one round trip) and apply them. Returns entries applied, the streams to read again at once
        (a full batch: more may wait), and those to read again after a pause (a failure)."""
        pools = sorted(pool_of_stream(s) for s in streams)  # the work follows what rang, not the pool count
        due = [(p, pool) for p in self.projections for pool in pools if pool in self._held[p.name]]
        reads = [(self.keys.stream(pool), await self._read_position(p, pool)) for p, pool in due]
        replies = await xrange_each(self.redis, reads, self.batch)
        applied, again, failed = 0, set(), set()
        for (projection, pool), (stream, _), entries in zip(due, reads, replies, strict=True):
            if isinstance(entries, Exception):
                self._failed(projection, pool, "", entries)
                failed.add(stream)
            elif entries:
                n = await self._apply_batch(projection, pool, entries)
                applied += n
                if n == 0:
                    failed.add(stream)
                elif len(entries) >= self.batch:
                    again.add(stream)
        return applied, again - failed, failed

    async def _read_position(self, projection: Projection, pool: str) -> str:
        """Where to read ``pool``'s stream from for ``projection``: its checkpoint."""
        known = self._read_from.get((projection.name, pool))
        if known is None:
            known = text(await self.redis.get(self.checkpoint_key(projection, pool)))
            self._read_from[(projection.name, pool)] = known
        return known

    def _failed(self, projection: Projection, pool: str, after: str, exc: BaseException) -> None:
        self._read_from.pop((projection.name, pool), None)
        log.error(
            "projection %s cannot apply %s after %s (%s); reading again from its checkpoint",
            projection.name,
            pool,
            after or "its checkpoint",
            exc,
            exc_info=exc,
        )

    async def _apply_batch(self, projection: Projection, pool: str, entries: list[Entry]) -> int:
        """Apply what was read after the checkpoint; on any failure (a lost reply included) forget
        where we were, so the next read starts again from the checkpoint in Redis."""
        where = (projection.name, pool)
        try:
            records = [decode_entry(pool, pos, fields) for pos, fields in entries]
            applied = await self.apply(projection, pool, records)
        except Exception as exc:  # this pool's batch is read again; the other pools' batches go on
            self._failed(projection, pool, entries[0][0].decode(), exc)
            return 0
        if not applied:
            self._read_from.pop(where, None)
            return 0
        self._read_from[where] = records[-1].position
        return len(records)

    async def apply(
        self, projection: Projection, pool: str, records: Sequence[Recorded], *, holder: str | None = None
    ) -> bool:
        """Fold ``records`` into the read model and move the checkpoint to the last one, atomically,
        if ``holder`` (default: this runner) holds the (projection, stream) lease.

        Returns:
            False if nothing was applied because the batch overlapped the checkpoint or the lease is
            not ours (the caller reads again from the checkpoint, or stops); True otherwise (a pure
            redelivery is a no-op).
        """
        checkpoint = text(await self.redis.get(self.checkpoint_key(projection, pool)))
        if checkpoint:  # fold only what the read model has not seen (a batch may overlap it)
            seen = position(checkpoint)
            records = [r for r in records if position(r.position) > seen]
            if not records:
                return True
        tx = Tx(self.redis)
        await projection.apply(self.keys, pool, records, tx)
        at = self._at(projection, pool)
        result = await tx.commit(
            self._apply, at, holder or self.consumer, records[0].position, records[-1].position
        )
        if result == Applied.NOT_HOLDER:
            self._held[projection.name].discard(pool)
        return result >= Applied.REDELIVERY

    async def catch_up(self) -> int:
        """Acquire leases and apply until every held stream is drained (for tests and tools)."""
        await self.renew()
        total = 0
        while n := await self.step():
            total += n
        return total

    async def run(self, stop: asyncio.Event, block_ms: int = 500) -> None:
        """Follow the streams until ``stop`` is set, reading those the bell rang (see
        ``events.bell``); leases renewed a few times per lease period."""
        bell = self.bell or Bell(self.redis, self.keys.bell())
        listener = self._listener = bell.listen(self.keys.stream(p) for p in self.pools)
        try:
            await asyncio.gather(self._renewer(stop), self._follow(stop, listener, block_ms))
        finally:
            self._listener = None
            await bell.forget(listener)

    async def _renewer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.renew()
            except Exception:
                log.exception("lease renewal failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_ms / 3000)

    async def _follow(self, stop: asyncio.Event, listener: Listener, block_ms: int) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            dirty = await listener.wait(block_ms / 1000)
            try:
                _, again, failed = await self._read(dirty)
            except Exception:  # a projector must outlive a Redis blip; it resumes from its checkpoint
                listener.again(dirty)
                log.exception("projections failed to read; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
                continue
            listener.again(again)
            if failed:  # again in a second: no tight loop over an entry that cannot be applied
                loop.call_later(1, listener.again, failed)

    async def rebuild(self, archive: Path | None = None) -> int:
        """Drop every read model of these projections and fold the whole log again (its archived
        part from ``archive``, see :func:`events.archive.log_batches`).

        Takes each (projection, stream) lease for the duration, so live runners pause on it, and
        releases it after; they then resume from the rebuilt checkpoint. Returns entries applied.

        Raises:
            ArchiveError: a log was partly archived and ``archive`` does not have that part; checked
                for every stream before anything is dropped.
        """
        for pool in self.pools:
            await check_whole(self.redis, self.keys, pool, archive)
        total = 0
        for projection in self.projections:
            for pool in self.pools:
                lease = self.keys.lease(pool, self.group(projection))
                holder = f"rebuild:{self.consumer}"
                await self.redis.set(lease, holder, px=600_000)  # from now on only we may write
                self._held[projection.name].discard(pool)
                try:
                    total += await self._refold(projection, pool, holder, archive)
                finally:
                    await Lease(self.redis, holder, 0).release(lease)
        return total

    async def _refold(self, projection: Projection, pool: str, holder: str, archive: Path | None) -> int:
        await self.drop(projection, pool)
        total = 0
        async for entries in log_batches(self.redis, self.keys, pool, batch=self.batch, archive=archive):
            records = [decode_entry(pool, pos, f) for pos, f in entries]
            if not await self.apply(projection, pool, records, holder=holder):
                raise RuntimeError(f"lost the lease of {projection.name} on {pool} during the rebuild")
            total += len(records)
        return total

    async def drop(self, projection: Projection, pool: str) -> None:
        """Delete one read model of one pool, checkpoint included (SCAN by its key prefix)."""
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(
            match=f"{projection.owned_prefix(self.keys, pool)}*", count=1000
        ):
            batch.append(key)
            if len(batch) >= 500:
                await self.redis.delete(*batch)
                batch.clear()
        if batch:
            await self.redis.delete(*batch)
