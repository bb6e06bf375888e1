"""The pool manager: keeps pools configured and full, fires deadlines, reconciles inventory and
provisions on-demand requests (the request duties are held through the ``{ctl}`` lease ``ondemand``).

Each pool's duties are held by one manager at a time through a lease, so any number of managers
can run and a dead one's pools fail over when its leases lapse. Every duty is an atomic,
idempotent decision script, so a duty done twice during a hand-over does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import cast

from events import CONTROL, Keys, PoolConfigured, VmDiscarded
from events.lease import Lease
from events.streams import text

from .errors import Refused
from .handlers import Targets
from .ondemand import OndemandService
from .pool import Meta, PoolCommands
from .pool_config import effective_settings, startup_plan, yaml_baseline
from .provider import PoolTarget, Provider

__all__ = ["LEASE_MS", "Manager"]

log = logging.getLogger(__name__)

LEASE_MS = 15_000
"""Default fail-over time of a pool's duties; a manager heartbeat older than this is dead."""


class Manager:
    """Timers of the pools.

    Args:
        commands: the pool decisions.
        keys: key names.
        settings: pool name → the ``PoolConfigured`` settings the YAML asks for.
        targets: pool → (provider, target), for inventory.
        holder: this process's unique name (lease holder).
        lease_ms: fail-over time of a pool's duties.
        tick_s: how often deadlines are fired and refills checked.
        reconcile_s: how often the provider inventory is compared with the log.
        ready_check_s: how often ready VMs are checked for reachability (vmpooler's vm_checktime).
        hostname_check: pools whose ready VMs are discarded when the guest reports another hostname.
        ondemand: the on-demand requests to provision, or ``None`` for none.
        ondemand_clone_limit: on-demand clones in flight per pool (vmpooler's ondemand_clone_limit).
    """

    def __init__(
        self,
        commands: PoolCommands,
        keys: Keys,
        settings: dict[str, PoolConfigured],
        targets: Targets,
        *,
        holder: str,
        lease_ms: int = LEASE_MS,
        tick_s: float = 1.0,
        reconcile_s: float = 30.0,
        ready_check_s: float = 60.0,
        hostname_check: frozenset[str] = frozenset(),
        ondemand: OndemandService | None = None,
        ondemand_clone_limit: int = 10,
    ) -> None:
        self.commands = commands
        self.keys = keys
        self.settings = settings
        self.targets = targets
        self.lease = Lease(commands.redis, holder, lease_ms)
        self.tick_s = tick_s
        self.reconcile_s = reconcile_s
        self.ready_check_s = ready_check_s
        self.hostname_check = hostname_check
        self.ondemand = ondemand
        self.ondemand_clone_limit = ondemand_clone_limit
        self.meta = Meta(f"manager:{holder}")
        self._mine: list[str] = []
        self._refresh_at = 0.0

    @property
    def pools(self) -> Sequence[str]:
        return list(self.settings)

    async def configure(self) -> None:
        """Record each pool's configured settings (an event only when they changed); fill the pools.

        API overrides survive: a setting the YAML gives as it did when last applied keeps its
        current value (see :func:`startup_plan`).
        """
        for pool, wanted in self.settings.items():
            baseline = await yaml_baseline(self.commands, pool)
            current = await effective_settings(self.commands, pool)
            for settings in startup_plan(wanted, baseline, current):
                changed, trimmed = await self.commands.configure(pool, settings, self.meta)
                if changed:
                    log.info("pool %s configured: %s (%d excess VMs discarded)", pool, settings, trimmed)

    async def _held(self) -> list[str]:
        """The pools this manager holds: at most its fair share (pools / live managers), renewed a
        few times per lease period; surplus leases are given up when more managers join."""
        now = time.monotonic()
        if now < self._refresh_at:
            return self._mine
        self._refresh_at = now + self.lease.ttl_ms / 3000
        redis, members = self.commands.redis, self.keys.members("manager")
        wall = int(time.time() * 1000)
        await redis.zadd(members, {self.lease.holder: wall})
        await redis.zremrangebyscore(members, 0, wall - self.lease.ttl_ms)
        share = -(-len(self.settings) // max(1, int(await redis.zcard(members))))
        held = [p for p in self._mine if await self.lease.hold(self.keys.lease(p, "manager"))]
        for pool in self.settings:
            if len(held) >= share:
                break
            if pool not in held and await self.lease.hold(self.keys.lease(pool, "manager")):
                held.append(pool)
        for pool in held[share:]:
            await self.lease.release(self.keys.lease(pool, "manager"))
        self._mine = held[:share]
        return self._mine

    async def tick(self) -> int:
        """Fire due deadlines, advance on-demand requests and top up every pool we hold; returns
        events appended by deadlines."""
        fired = 0
        held = await self._held()
        if self.ondemand is not None and await self.lease.hold(self.keys.lease(CONTROL, "ondemand")):
            await self.ondemand.tick(self.meta.actor)
        for pool in held:
            fired += await self.commands.fire_due(pool, self.meta)
            await self.commands.refill(pool, self.meta)
            if self.ondemand is not None:
                await self.commands.ondemand_start(pool, self.ondemand_clone_limit, self.meta)
        return fired

    async def reconcile(self) -> tuple[int, int]:
        """Compare each held pool with its provider's inventory; returns (vanished, discovered)."""
        vanished = discovered = 0
        for pool in await self._held():
            provider, target = self.targets(pool)
            listed_at = self.commands.clock()
            try:
                inventory = await provider.list_vms(target)
            except Exception as exc:  # a provider outage must not stop the other pools
                log.warning("inventory of %s failed: %s", pool, exc)
                continue
            v, d = await self.commands.reconcile(pool, inventory, listed_at, self.meta)
            vanished += v
            discovered += d
        return vanished, discovered

    async def check_ready(self, min_age_ms: int = 60_000) -> int:
        """Discard ready VMs that stopped answering, or (after ``min_age_ms`` ready) report another
        hostname (vmpooler T6/T7); returns how many were discarded."""
        discarded = 0
        for pool in await self._held():
            provider, target = self.targets(pool)
            entered = cast(
                list[tuple[bytes, float]],
                await self.commands.redis.zrange(self.keys.in_state(pool, "ready"), 0, -1, withscores=True),
            )
            now = self.commands.clock()
            for raw, since in entered:
                vm = text(raw)
                reason = await self._ready_problem(provider, target, vm, pool, now - int(since) >= min_age_ms)
                if reason:
                    try:
                        await self.commands.append(
                            pool, [(vm, VmDiscarded(reason=reason))], self.meta, refill=2
                        )
                        discarded += 1
                    except Refused:
                        pass  # checked out or retired meanwhile
        return discarded

    async def _ready_problem(
        self, provider: Provider, target: PoolTarget, vm: str, pool: str, old: bool
    ) -> str:
        try:
            if not await provider.vm_ready(target, vm):
                return "unreachable"
            if old and pool in self.hostname_check:
                info = await provider.get_vm(target, vm)
                if info is not None and info.hostname and info.hostname != vm:
                    return f"hostname mismatch ({info.hostname})"
        except Exception as exc:
            return f"unreachable ({exc})"
        return ""

    async def run(self, stop: asyncio.Event) -> None:
        """Configure, then tick and reconcile until ``stop`` is set; Redis errors are retried."""
        while not stop.is_set():
            try:
                await self.configure()
                break
            except Exception:
                log.exception("configuring pools failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self.reconcile_s
        next_ready_check = loop.time() + self.ready_check_s
        while not stop.is_set():
            try:
                await self.tick()
                if loop.time() >= next_reconcile:
                    await self.reconcile()
                    next_reconcile = loop.time() + self.reconcile_s
                if loop.time() >= next_ready_check:
                    await self.check_ready()
                    next_ready_check = loop.time() + self.ready_check_s
            except Exception:
                log.exception("manager tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick_s)
        await self.leave()

    async def leave(self) -> None:
        """Give up our pools and membership at once, so other managers take over without waiting."""
        with contextlib.suppress(Exception):
            for pool in self._mine:
                await self.lease.release(self.keys.lease(pool, "manager"))
            await self.lease.release(self.keys.lease(CONTROL, "ondemand"))
            await self.commands.redis.zrem(self.keys.members("manager"), self.lease.holder)
        self._mine = []
