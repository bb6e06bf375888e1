"""Pool decisions: every state-dependent change is one Lua call in the pool's slot (DESIGN §3)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from events import CONTROL, Event, Keys, PoolConfigured, PoolOndemandRequested, VmCheckedOut, VmReady, encode
from events.archive import log_batches
from events.lifecycle import STATES

from ._scripts import Scripts
from .errors import Refused
from .names import NameGenerator

__all__ = ["Clock", "Meta", "PoolCommands", "system_clock"]

_RESERVE_BATCH = 16
"""Names reserved at a time per pool; unused ones stay reserved for this process's next decisions."""

_STATE_KEYS = (
    *("state", "due", "carry", "gone", "cfg", "od", "odq", "odm", "odn"),
    *("od:status", "od:due", "od:work", "od:req", "od:forget"),
)
"""Decision-state keys besides one sorted set per live state: a pool's, and the control slot's
on-demand request keys (``rebuild_state(CONTROL)`` rebuilds those; see swap.lua too)."""

Clock = Callable[[], int]
"""Returns the current time in milliseconds since the epoch; injected so tests drive time."""


def system_clock() -> int:
    return time.time_ns() // 1_000_000


class Meta:
    """Envelope metadata for the events of one command: who, and which request or event caused it."""

    __slots__ = ("actor", "causation_id", "correlation_id")

    def __init__(self, actor: str, correlation_id: str = "", causation_id: str = "") -> None:
        self.actor = actor
        self.correlation_id = correlation_id
        self.causation_id = causation_id


class PoolCommands:
    """Atomic decisions on pools. The only writer of the pools' decision state and streams.

    Args:
        redis: client (bytes replies).
        keys: key names of this installation.
        names: generator of candidate VM names.
        clock: time source in ms.
        new_id: fresh unique id source (event ids are ``<id>-<n>``).
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        names: NameGenerator | None = None,
        clock: Clock = system_clock,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.names = names or NameGenerator()
        self.clock = clock
        self.new_id = new_id
        self._scripts = Scripts(redis)
        self._spare: dict[str, list[str]] = {}

    async def _reserve(self, pool: str, n: int) -> None:
        """Reserve at least ``n`` more names for ``pool`` in the cross-pool registry (kept spare)."""
        candidates = self.names.many(max(n, _RESERVE_BATCH))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in candidates:
                pipe.hsetnx(self.keys.names(), name, pool)
            won = await pipe.execute()
        self._spare.setdefault(pool, []).extend(name for name, ok in zip(candidates, won, strict=True) if ok)

    def _used(self, pool: str, made: Sequence[bytes]) -> None:
        if made:
            taken = {m.decode() for m in made}
            self._spare[pool] = [n for n in self._spare[pool] if n not in taken]

    def _head(self, meta: Meta) -> list[Any]:
        return [self.clock(), self.new_id(), meta.actor, meta.correlation_id, meta.causation_id]

    async def _run(self, script: str, pool: str, meta: Meta, args: list[Any], spare: int) -> Any:
        """Run a decision script, offering up to ``spare`` of this process's reserved names for the
        clones it may request. Names are reserved only when a script asked for more than it was
        offered, so a decision that requests no clone changes nothing else (one round trip)."""
        names = self._spare.get(pool, [])[:spare]
        result, made, short = await self._scripts[script](
            keys=[self.keys.base(pool)], args=[*self._head(meta), *args, *names]
        )
        self._used(pool, made)
        if short:
            short = int(short)
            spare_names = self._spare.setdefault(pool, [])
            if len(spare_names) < short:
                await self._reserve(pool, short - len(spare_names))
            _, made, _ = await self._scripts["append"](
                keys=[self.keys.base(pool)], args=[*self._head(meta), 0, *self._spare[pool][:short]]
            )
            self._used(pool, made)
        return result

    async def configure(self, pool: str, settings: PoolConfigured, meta: Meta) -> tuple[bool, int]:
        """Record the pool's settings if they changed; trim excess VMs and refill.

        Returns:
            (whether a ``pool.configured`` event was appended, how many VMs were discarded as excess)
        """
        await self.redis.sadd(self.keys.pools(), pool)
        changed, trimmed = await self._run("configure", pool, meta, [encode(settings)], spare=settings.size)
        return bool(changed), int(trimmed)

    async def checkout(self, pool: str, n: int, event: VmCheckedOut, meta: Meta) -> list[str]:
        """Hand out ``n`` ready VMs of ``pool``, oldest first, or none; the refill is requested at once."""
        picked = await self._run("checkout", pool, meta, [n, encode(event)], spare=n + 1)
        return [p.decode() for p in picked]

    async def append(
        self, pool: str, events: Sequence[tuple[str, Event]], meta: Meta, *, refill: int = 0
    ) -> list[str]:
        """Append events about VMs of ``pool``, all or none, each checked against the state machine.

        Raises:
            Refused: an event is not allowed in its VM's current state; nothing was appended.
        """
        args: list[Any] = [len(events)]
        for vm, event in events:
            args += [vm, event.__struct_config__.tag, encode(event)]
        result = await self._run("append", pool, meta, args, spare=refill)
        if result[0] == 0:
            index = int(result[1]) - 1
            vm, event = events[index]
            raise Refused(vm, str(event.__struct_config__.tag), result[2].decode())
        return [r.decode() for r in result[1:]]

    async def refill(self, pool: str, meta: Meta, spare: int = 8) -> None:
        """Request clones for any shortfall of ``pool`` (with up to ``spare`` new names)."""
        await self.append(pool, [], meta, refill=spare)

    async def fire_due(self, pool: str, meta: Meta, limit: int = 200) -> int:
        """Fire the deadlines of ``pool`` that are due now; returns how many events that appended."""
        return int(await self._run("fire_due", pool, meta, [limit], spare=4))

    async def reset(self, pool: str, meta: Meta) -> int:
        """Drain ``pool`` (discard every pending and ready VM) and refill it; returns how many were drained."""
        size = int(await self.redis.hget(self.keys.config(pool), "size") or 0)
        return int(await self._run("reset", pool, meta, [], spare=size))

    async def reconcile(
        self, pool: str, inventory: Sequence[str], listed_at: int, meta: Meta
    ) -> tuple[int, int]:
        """Converge with the provider's inventory listed at ``listed_at`` (ms).

        Returns:
            (VMs found vanished, VMs discovered)
        """
        vanished, discovered = await self._run(
            "reconcile", pool, meta, [listed_at, len(inventory), *inventory], spare=4
        )
        return int(vanished), int(discovered)

    async def ready(self, pool: str, vm: str, event: VmReady, meta: Meta) -> str:
        """A booting VM answered: ``"ready"`` (joined the pool), ``"delivered"`` (handed to its
        on-demand request in the same step) or ``"discarded"`` (its request is closed).

        Raises:
            Refused: the VM is not booting; nothing was appended.
        """
        result = await self._run("ready", pool, meta, [vm, encode(event)], spare=2)
        if int(result[0]) == 0:
            raise Refused(vm, "vm.ready", result[1].decode())
        return str(result[1].decode())

    async def ondemand_open(self, pool: str, event: PoolOndemandRequested, meta: Meta) -> bool:
        """Open a request's slice in ``pool`` unless it is open already; returns whether it opened."""
        return bool(await self._run("odopen", pool, meta, [encode(event)], spare=0))

    async def ondemand_start(self, pool: str, limit: int, meta: Meta) -> list[str]:
        """Request clones for ``pool``'s open on-demand slices within ``limit`` clones in flight."""
        made: list[str] = []
        for _ in range(3):  # more names are reserved when the spare ones run out
            names = self._spare.get(pool, [])[: max(limit, 1)]
            _, got, short = await self._scripts["odstart"](
                keys=[self.keys.base(pool)], args=[*self._head(meta), limit, *names]
            )
            self._used(pool, got)
            made += [g.decode() for g in got]
            if not short:
                break
            await self._reserve(pool, int(short))
        return made

    async def ondemand_close(self, pool: str, request_id: str, reason: str, meta: Meta) -> int:
        """Close a request's slices in ``pool``; unless ``reason`` is ``fulfilled`` its live VMs are
        discarded. Returns how many were discarded (-1: nothing to close, nothing appended)."""
        return int(await self._run("odclose", pool, meta, [request_id, reason], spare=0))

    async def control(self, request_id: str, event: Event, meta: Meta) -> tuple[bool, str]:
        """Append a request event to the control stream if the request's status allows it.

        Returns:
            (whether it was appended, the request's status before: ``""`` if unknown)
        """
        tag = str(event.__struct_config__.tag)
        ok, before = await self._scripts["ctl_append"](
            keys=[self.keys.base(CONTROL)], args=[*self._head(meta), request_id, tag, encode(event)]
        )
        return bool(ok), before.decode() if isinstance(before, bytes) else str(before)

    async def control_fire(self, meta: Meta, limit: int = 100) -> list[str]:
        """Fail the pending requests whose TTL ran out; returns their ids."""
        failed = await self._scripts["ctl_fire"](
            keys=[self.keys.base(CONTROL)], args=[*self._head(meta), limit]
        )
        return [f.decode() for f in failed]

    async def rebuild_state(self, pool: str, batch: int = 500, archive: Path | None = None) -> int:
        """Rebuild the pool's decision state by replaying its log, beside live decisions (``pool`` may
        be ``events.CONTROL``: the on-demand request state is rebuilt from the control stream).

        The replay writes into scratch keys in the pool's slot; a last atomic step folds in what
        was appended meanwhile and moves the scratch keys over the live ones, so decisions never
        see half-rebuilt state. Returns how many entries the state machine refused (0 when the log
        is consistent). The archived part of the log, if any, is read from ``archive``.

        Raises:
            ArchiveError: part of the log was archived and ``archive`` does not have it.
        """
        scratch = f"{self.keys.base(pool)}:rebuild"
        await self._drop(scratch)
        refused, last = 0, "0-0"
        async for entries in log_batches(self.redis, self.keys, pool, batch=batch, archive=archive):
            args: list[Any] = [len(entries)]
            for _, f in entries:
                args += [f[b"vm"], f[b"type"], f[b"at"], f[b"data"]]
            refused += int(await self._scripts["replay"](keys=[scratch], args=args))
            last = entries[-1][0].decode()
        await self._scripts["swap"](keys=[scratch], args=[self.keys.base(pool), last])
        return refused

    async def _drop(self, base: str) -> None:
        await self.redis.delete(
            *[f"{base}:{k}" for k in _STATE_KEYS],
            *[f"{base}:s:{s}" for s in STATES],
        )

    async def drop_state(self, pool: str) -> None:
        """Delete the pool's decision state (never its log)."""
        await self._drop(self.keys.base(pool))
