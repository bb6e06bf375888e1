"""Work with side effects outside Redis, one handler per event type (at-least-once, idempotent).

Every handler first re-checks the VM's state, so a redelivered or duplicated entry does nothing
twice; the VM name was decided in the event, so a retried clone adopts what the provider has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import msgspec

import events as ev
from events import Recorded
from events.lifecycle import TRANSITIONS
from events.streams import text

from .backoff import CloneBackoff
from .dns import DnsRecords
from .errors import Refused
from .ondemand import is_permanent_error
from .pool import Meta, PoolCommands
from .provider import PoolTarget, Provider, ProviderError
from .tasks import DONE, TaskMarks

__all__ = ["Handlers", "Targets", "destroy_backoff"]

log = logging.getLogger(__name__)

Targets = Callable[[str], tuple[Provider, PoolTarget]]
"""Pool name → (its provider, what the provider needs to know about the pool)."""

Task = Literal["disk", "snapshot", "revert", "migrate"]

_TASK_STATES = TRANSITIONS["vm.disk-requested"].sources
"""States a task may run in (those its request may be appended in)."""

_ENTERS_COMPLETED = frozenset(
    t for t, r in TRANSITIONS.items() if r.target == "completed" and t != "vm.destroy-failed"
)


def destroy_backoff(attempt: int) -> float:
    """Seconds before destroy attempt ``attempt + 1``: 5 s doubling, at most 10 minutes."""
    return float(min(600, 5 * 2 ** (attempt - 1)))


class Handlers:
    """The worker's handlers. ``handle`` returns when the entry's work is done (or not needed).

    Args:
        commands: the pool decisions.
        targets: resolves a pool to its provider.
        worker: this worker's name (recorded in events).
        poll: readiness polling interval bounds in seconds (first, maximum).
        migrate: whether to ask the provider to migrate VMs at checkout (vmpooler's migration_limit).
        provider_calls: clone, destroy and task calls in flight at once (vmpooler's task_limit).
        dns: the pools' DNS plugins; records are published as part of a clone and withdrawn as part
            of a destroy (``None``: no records are managed).
        backoff: the pools' clone back-off (default: 1 s doubling to 60 s, see :mod:`commands.backoff`).
        pause: awaited for each wait of a clone held by the back-off; returns early when the handlers
            stop (tests inject one driven by their clock).
    """

    def __init__(
        self,
        commands: PoolCommands,
        targets: Targets,
        *,
        worker: str,
        poll: tuple[float, float] = (0.05, 2.0),
        migrate: bool = False,
        provider_calls: int = 10,
        dns: DnsRecords | None = None,
        backoff: CloneBackoff | None = None,
        pause: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.commands = commands
        self.targets = targets
        self.worker = worker
        self.poll = poll
        self.migrate = migrate
        # Clones, destroys and tasks hold one of these while they call the provider (vmpooler's
        # task_limit); readiness polling does not, so VMs that boot slowly never starve clones.
        self.slots = asyncio.Semaphore(provider_calls)
        self._stopping = asyncio.Event()
        self.dns = dns if dns is not None else DnsRecords()
        self.marks = TaskMarks(commands.redis, commands.keys)
        self.backoff = backoff or CloneBackoff(commands.redis, commands.keys)
        self._pause = pause or self._wait

    def stop(self) -> None:
        """Make long handlers (readiness polling) return soon; their entries stay pending for the
        next delivery. Cancellation alone is not enough: a cancel that lands inside a Redis call can
        be absorbed by the client's retry logic."""
        self._stopping.set()

    def wants(self, event_type: str) -> bool:
        return event_type in _ENTERS_COMPLETED or event_type in _SIMPLE

    async def handle(self, r: Recorded, deliveries: int = 1) -> None:
        meta = Meta(f"worker:{self.worker}", r.correlation_id, r.event_id)
        e = r.event
        if isinstance(e, ev.VmCloneRequested):
            await self._clone(r.stream, r.vm, e, deliveries, meta)
        elif isinstance(e, ev.VmCloned):
            await self._await_ready(r.stream, r.vm, r.at, e.seconds, meta)
        elif r.type in _ENTERS_COMPLETED or isinstance(e, ev.VmDestroyRequested):
            attempt = e.attempt if isinstance(e, ev.VmDestroyRequested) else 1
            await self._destroy(r.stream, r.vm, attempt, deliveries > 1, meta)
        elif isinstance(e, ev.VmCheckedOut):
            await self._checked_out(r, e, meta)
        elif isinstance(e, ev.VmDiskRequested):
            await self._task(r, "disk", meta, lambda p, t: p.create_disk(t, r.vm, e.size_gb))
        elif isinstance(e, ev.VmSnapshotRequested):
            await self._task(r, "snapshot", meta, lambda p, t: p.create_snapshot(t, r.vm, e.name))
        elif isinstance(e, ev.VmRevertRequested):
            await self._task(r, "revert", meta, lambda p, t: p.revert_snapshot(t, r.vm, e.name))

    async def _state(self, pool: str, vm: str) -> str:
        raw = await self.commands.redis.hget(self.commands.keys.state(pool), vm)
        return text(raw)

    async def _append(self, pool: str, vm: str, event: ev.Event, meta: Meta) -> bool:
        try:
            await self.commands.append(pool, [(vm, event)], meta, refill=2)
        except Refused as exc:
            log.info("%s", exc)
            return False
        return True

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _admitted(self, pool: str, vm: str) -> bool | None:
        """Wait out the pool's clone back-off; returns whether this clone is the period's probe, or
        ``None`` when the VM left ``cloning`` meanwhile (boot timeout, drain). Rechecked every few
        seconds, so a probe's success releases the waiting clones soon."""
        while True:
            admission = await self.backoff.admit(pool)
            if admission.go:
                return admission.probe
            await self._pause(min(admission.wait_s, _BACKOFF_RECHECK_S))
            if self._stopping.is_set():
                raise asyncio.CancelledError  # not done: leave the entry pending for another delivery
            if await self._state(pool, vm) != "cloning":
                return None

    async def _clone(self, pool: str, vm: str, e: ev.VmCloneRequested, deliveries: int, meta: Meta) -> None:
        if await self._state(pool, vm) != "cloning":
            return
        probe = await self._admitted(pool, vm)
        if probe is None:
            return
        if not await self._append(pool, vm, ev.VmCloneStarted(worker=self.worker, attempt=deliveries), meta):
            return
        provider, target = self.targets(pool)
        target = msgspec.structs.replace(target, template=e.template or target.template)
        started = time.monotonic()
        try:
            # create_vm adopts (and finishes) a VM of that name that an earlier attempt left behind
            async with self.slots:
                # only a redelivered clone can find its VM already there (an earlier attempt died)
                adopted = deliveries > 1 and await provider.get_vm(target, vm) is not None
                info = await provider.create_vm(target, vm)
                # part of the clone, as in vmpooler: a failure fails the clone
                await self.dns.vm_cloned(pool, vm, info.ip)
        except Exception as exc:  # any provider failure fails this clone; the pool refills
            error, error_class = str(exc) or type(exc).__name__, type(exc).__name__
            flagged = isinstance(exc, ProviderError) and exc.permanent
            permanent = is_permanent_error(error, error_class, flagged=flagged)
            # before the failure is logged: it requests the replacement clone, which must see the back-off
            retry_in = exc.retry_in if isinstance(exc, ProviderError) else 0.0
            period = await self.backoff.failed(pool, probe=probe, at_least_s=retry_in)
            log.warning(
                "clone of %s in pool %s failed: %s; the pool's clones wait %g s", vm, pool, error, period
            )
            failed = ev.VmCloneFailed(error=error, error_class=error_class, permanent=permanent)
            await self._append(pool, vm, failed, meta)
            return
        await self.backoff.succeeded(pool)
        cloned = ev.VmCloned(
            seconds=round(time.monotonic() - started, 3), ip=info.ip, host=info.host, adopted=adopted
        )
        if not await self._append(pool, vm, cloned, meta) and await self._state(pool, vm) in {
            "",
            "completed",
            "destroying",
        }:
            await provider.destroy_vm(target, vm)  # the VM was retired while cloning: do not leak it
            await self.dns.vm_destroyed(pool, vm)

    async def _await_ready(
        self, pool: str, vm: str, cloned_at: int, clone_seconds: float, meta: Meta
    ) -> None:
        provider, target = self.targets(pool)
        delay = self.poll[0]
        while not self._stopping.is_set() and await self._state(pool, vm) == "booting":
            try:
                ready = await provider.vm_ready(target, vm)
            except Exception as exc:  # not ready yet; the boot timeout decides when to give up
                log.info("ready check of %s failed: %s", vm, exc)
                ready = False
            if ready:
                boot = clone_seconds + max(0, self.commands.clock() - cloned_at) / 1000
                # an on-demand VM goes to its request in the same step (see commands/lua/ready.lua)
                with contextlib.suppress(Refused):
                    await self.commands.ready(pool, vm, ev.VmReady(boot_seconds=round(boot, 3)), meta)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(self.poll[1], delay * 2)
        if self._stopping.is_set():
            raise asyncio.CancelledError  # not done: leave the entry pending for another delivery

    async def _destroy(self, pool: str, vm: str, attempt: int, redelivered: bool, meta: Meta) -> None:
        state = await self._state(pool, vm)
        if state == "completed":
            if not await self._append(pool, vm, ev.VmDestroyStarted(worker=self.worker), meta):
                return
        elif not (state == "destroying" and redelivered):  # a crashed destroy is finished by its redelivery
            return
        provider, target = self.targets(pool)
        started = time.monotonic()
        try:
            async with self.slots:
                await provider.destroy_vm(target, vm)
                await self.dns.vm_destroyed(pool, vm)  # retried with the destroy on failure (both idempotent)
        except Exception as exc:
            failed = ev.VmDestroyFailed(
                error=str(exc) or type(exc).__name__, attempt=attempt, retry_in=destroy_backoff(attempt)
            )
            await self._append(pool, vm, failed, meta)
            return
        await self._append(pool, vm, ev.VmDestroyed(seconds=round(time.monotonic() - started, 3)), meta)

    async def _checked_out(self, r: Recorded, e: ev.VmCheckedOut, meta: Meta) -> None:
        """Label the VM with its user where the provider keeps labels (best effort: cost reports only),
        then migrate it if migration is on."""
        if e.token_user:
            provider, target = self.targets(r.stream)
            try:
                await provider.tag_vm(target, r.vm, {"token-user": e.token_user})
            except Exception as exc:
                log.warning("tagging %s with its user failed: %s", r.vm, exc)
        if self.migrate:
            await self._task(r, "migrate", meta, lambda p, t: p.migrate_vm(t, r.vm))

    async def _task(
        self,
        r: Recorded,
        task: Task,
        meta: Meta,
        call: Callable[[Provider, PoolTarget], Awaitable[object]],
    ) -> None:
        """Run a task at most once per request (see :mod:`commands.tasks`), never on a retired VM."""
        pool, vm = r.stream, r.vm
        if not await self._may_run(pool, vm, task, meta):
            return
        provider, target = self.targets(pool)
        async with self.slots:
            # checked again: the VM may have been returned while the task waited for a slot
            if not await self._may_run(pool, vm, task, meta):
                return
            earlier = await self.marks.claim(pool, r.event_id, f"{self.worker} at {self.commands.clock()}")
            if earlier:
                await self._interrupted(r, task, earlier, meta)
                return
            try:
                outcome = _outcome(r.event, await call(provider, target))
            except Exception as exc:
                outcome = ev.VmTaskFailed(task=task, error=str(exc) or type(exc).__name__)
        if outcome is not None:
            await self._append(pool, vm, outcome, meta)
        await self.marks.finish(pool, r.event_id)

    async def _may_run(self, pool: str, vm: str, task: Task, meta: Meta) -> bool:
        state = await self._state(pool, vm)
        if state in _TASK_STATES:
            return True
        if state:  # retired: completed, destroying, discovered (a VM that is gone gets nothing)
            refused = ev.VmTaskFailed(task=task, error=f"refused: VM {vm} is being destroyed ({state})")
            await self._append(pool, vm, refused, meta)
        return False

    async def _interrupted(self, r: Recorded, task: Task, earlier: str, meta: Meta) -> None:
        """A redelivered task whose provider call was started before: done if its outcome is logged;
        else not repeated (it may have been applied), and the log says so."""
        if earlier != DONE and not await self.marks.recorded(r.stream, r.position, r.event_id):
            error = (
                f"interrupted: an earlier attempt ({earlier}) stopped before recording its outcome; "
                f"not repeated, so the {task} may or may not have been applied"
            )
            await self._append(r.stream, r.vm, ev.VmTaskFailed(task=task, error=error), meta)
        await self.marks.finish(r.stream, r.event_id)


def _outcome(e: ev.Event, result: object) -> ev.Event | None:
    """The event recording a finished task (a migration that stayed put records nothing)."""
    if isinstance(e, ev.VmDiskRequested):
        return ev.VmDiskAdded(size_gb=e.size_gb)
    if isinstance(e, ev.VmSnapshotRequested):
        return ev.VmSnapshotTaken(name=e.name)
    if isinstance(e, ev.VmRevertRequested):
        return ev.VmReverted(name=e.name)
    return ev.VmMigrated(host=result) if isinstance(result, str) and result else None


_BACKOFF_RECHECK_S = 5.0
"""How often a clone held by the back-off looks again (a probe's success ends the back-off early)."""

_SIMPLE: Mapping[str, None] = dict.fromkeys(
    (
        "vm.clone-requested",
        "vm.cloned",
        "vm.checked-out",
        "vm.destroy-requested",
        "vm.disk-requested",
        "vm.snapshot-requested",
        "vm.revert-requested",
    )
)
