"""Runs projections over pool streams: one active consumer per (projection, stream) by lease,
consumer groups for delivery, checkpoint written atomically with the read-model change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from events import Keys, Recorded, decode_entry
from events.archive import check_whole, log_batches
from events.lease import Lease
from events.streams import Entry, pool_of_stream, position, text, xreadgroup

from ._base import Projection
from ._tx import Tx

__all__ = ["ProjectionRunner"]


log = logging.getLogger(__name__)

_APPLY = (resources.files("projectors") / "lua" / "apply.lua").read_text()


class ProjectionRunner:
    """Folds pool streams into read models.

    Args:
        redis: client (bytes replies).
        keys: key names of this installation.
        projections: the read models to maintain.
        pools: the pool streams to follow.
        consumer: this process's consumer name (unique per process).
        lease_ms: how long a lease on a (projection, stream) lasts without renewal.
        batch: entries per read.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        projections: Sequence[Projection],
        pools: Sequence[str],
        *,
        consumer: str,
        lease_ms: int = 10_000,
        batch: int = 200,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.projections = list(projections)
        self.pools = list(pools)
        self.consumer = consumer
        self.lease_ms = lease_ms
        self.batch = batch
        self._apply = redis.register_script(_APPLY)
        self._lease = Lease(redis, consumer, lease_ms)
        self._held: dict[str, set[str]] = {p.name: set() for p in self.projections}

    def group(self, projection: Projection) -> str:
        return f"proj:{projection.name}"

    def checkpoint_key(self, projection: Projection, pool: str) -> str:
        return f"{projection.owned_prefix(self.keys, pool)}:checkpoint"

    async def _acquire(self, projection: Projection, pool: str) -> bool:
        """Take or renew the lease; on a fresh take, point the group at our checkpoint."""
        held = self._held[projection.name]
        if not await self._lease.hold(self.keys.lease(pool, self.group(projection))):
            held.discard(pool)
            return False
        if pool in held:
            return True
        stream, group = self.keys.stream(pool), self.group(projection)
        checkpoint = text(await self.redis.get(self.checkpoint_key(projection, pool))) or "0-0"
        try:
            await self.redis.xgroup_create(stream, group, id=checkpoint, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            await self.redis.xgroup_setid(stream, group, id=checkpoint)
        await self._ack_stale(stream, group)
        held.add(pool)
        return True

    async def _ack_stale(self, stream: str, group: str) -> None:
        """Entries left pending by an earlier holder are re-delivered after SETID; ack the old claims."""
        while True:
            claimed = await self.redis.xautoclaim(
                stream, group, self.consumer, min_idle_time=0, start_id="0-0", count=500, justid=True
            )
            if not claimed:
                return
            await self.redis.xack(stream, group, *claimed)

    async def renew(self) -> None:
        for projection in self.projections:
            for pool in self.pools:
                await self._acquire(projection, pool)

    async def step(self, block_ms: int | None = None) -> int:
        """Read and apply one batch per held stream of every projection; returns entries applied."""
        applied = 0
        for projection in self.projections:
            applied += await self._step_one(projection, block_ms)
        return applied

    async def _step_one(self, projection: Projection, block_ms: int | None) -> int:
        held = sorted(self._held[projection.name])
        if not held:
            return 0
        streams = {self.keys.stream(p): ">" for p in held}
        reply = await xreadgroup(
            self.redis, self.group(projection), self.consumer, streams, count=self.batch, block=block_ms
        )
        applied = 0
        for stream, entries in reply:
            try:
                applied += await self._apply_batch(projection, pool_of_stream(stream), entries)
            except Exception:  # this pool's batch was rewound; the other pools' batches go on
                log.exception("projection %s failed on %s; it will be read again", projection.name, stream)
        return applied

    async def _apply_batch(self, projection: Projection, pool: str, entries: list[Entry]) -> int:
        stream, group = self.keys.stream(pool), self.group(projection)
        try:
            records = [decode_entry(pool, pos, fields) for pos, fields in entries if fields]
            applied = await self.apply(projection, pool, records) if records else True
        except Exception:
            await self._rewind(projection, pool)  # nothing was applied: read the batch again
            raise
        await self.redis.xack(stream, group, *[pos for pos, _ in entries])
        if not applied:
            await self._rewind(projection, pool)
            return 0
        return len(records)

    async def _rewind(self, projection: Projection, pool: str) -> None:
        """Deliver again everything after the checkpoint (only while we hold the stream's lease:
        a holder that lost it must not move its successor's delivery)."""
        lease = self.keys.lease(pool, self.group(projection))
        if text(await self.redis.get(lease)) != self.consumer:
            self._held[projection.name].discard(pool)
            return
        checkpoint = text(await self.redis.get(self.checkpoint_key(projection, pool))) or "0-0"
        await self.redis.xgroup_setid(self.keys.stream(pool), self.group(projection), id=checkpoint)

    async def apply(
        self, projection: Projection, pool: str, records: Sequence[Recorded], *, holder: str | None = None
    ) -> bool:
        """Fold ``records`` into the read model and move the checkpoint to the last one, atomically,
        if ``holder`` (default: this runner) holds the (projection, stream) lease.

        Returns:
            False if nothing was applied because the batch overlapped the checkpoint or the lease is
            not ours (the caller rewinds or stops); True otherwise (a pure redelivery is a no-op).
        """
        checkpoint = text(await self.redis.get(self.checkpoint_key(projection, pool)))
        if checkpoint:  # fold only what the read model has not seen (a batch may overlap it)
            seen = position(checkpoint)
            records = [r for r in records if position(r.position) > seen]
            if not records:
                return True
        tx = Tx(self.redis)
        await projection.apply(self.keys, pool, records, tx)
        result = await self._apply(
            keys=[self.checkpoint_key(projection, pool), self.keys.lease(pool, self.group(projection))],
            args=[holder or self.consumer, records[0].position, records[-1].position, *tx.finish()],
        )
        if int(result) == -2:
            self._held[projection.name].discard(pool)
        return int(result) >= 0

    async def catch_up(self) -> int:
        """Acquire leases and apply until every held stream is drained (for tests and tools)."""
        await self.renew()
        total = 0
        while n := await self.step():
            total += n
        return total

    async def run(self, stop: asyncio.Event, block_ms: int = 500) -> None:
        """Follow the streams until ``stop`` is set: one reader per projection, leases renewed
        a few times per lease period."""

        async def renewer() -> None:
            while not stop.is_set():
                try:
                    await self.renew()
                except Exception:
                    log.exception("lease renewal failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.lease_ms / 3000)

        async def reader(projection: Projection) -> None:
            while not stop.is_set():
                try:
                    if not await self._step_one(projection, block_ms) and not self._held[projection.name]:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), block_ms / 1000)
                except Exception:  # a projector must outlive a Redis blip; it resumes from its checkpoint
                    log.exception("projection %s failed; retrying", projection.name)
                    await asyncio.sleep(1)

        await self.renew()
        await asyncio.gather(renewer(), *(reader(p) for p in self.projections))

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
