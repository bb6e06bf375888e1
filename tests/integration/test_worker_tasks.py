"""Disk, snapshot, revert and migrate tasks run at most once per request and never on a retired VM.

The handlers run against real Redis and the dummy provider; a worker's crash is a handler whose log append
fails after its provider call, so the entry is redelivered to another worker (``deliveries=2``).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
import redis.asyncio as aioredis

import events as ev
from commands.handlers import Handlers
from commands.pool import Meta, PoolCommands
from commands.provider import PoolTarget, Provider
from events import Keys, Recorded, decode_entry
from events.streams import xrange
from providers.dummy import DummyProvider

POOL = "tasks"
META = Meta("test")
TARGET = PoolTarget(name=POOL, template="tpl")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


async def _log(redis: aioredis.Redis, keys: Keys) -> list[Recorded]:
    return [decode_entry(POOL, p, f) for p, f in await xrange(redis, keys.stream(POOL))]


def _targets(provider: Provider) -> Callable[[str], tuple[Provider, PoolTarget]]:
    return lambda pool: (provider, TARGET)


class Setup:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.cmds = PoolCommands(redis, self.keys, clock=FakeClock())
        self.provider = DummyProvider("dummy", redis, prefix=prefix, options={})

    def handlers(self, worker: str) -> Handlers:
        return Handlers(self.cmds, _targets(self.provider), worker=worker)

    async def running_vm(self) -> str:
        """A checked-out VM that exists at the provider, with a snapshot ``s1``."""
        settings = ev.PoolConfigured(size=1, template="tpl", clone_limit=1, ready_ttl=0, timeout=0)
        await self.cmds.configure(POOL, settings, META)
        (vm,) = [r.vm for r in await _log(self.redis, self.keys) if r.type == "vm.clone-requested"]
        await self.provider.create_vm(TARGET, vm)
        await self.provider.create_snapshot(TARGET, vm, "s1")
        await self.cmds.append(POOL, [(vm, ev.VmCloned(seconds=1.0))], META)
        await self.cmds.ready(POOL, vm, ev.VmReady(boot_seconds=1.0), META)
        assert await self.cmds.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), META) == [vm]
        return vm

    async def request(self, vm: str, event: ev.Event) -> Recorded:
        await self.cmds.append(POOL, [(vm, event)], META)
        return (await _log(self.redis, self.keys))[-1]

    async def types(self, vm: str) -> list[str]:
        return [r.type for r in await _log(self.redis, self.keys) if r.vm == vm]

    async def disks(self, vm: str) -> list[int]:
        record = await self.provider.inspect(TARGET, vm)
        assert record is not None
        return record.disks


def _crash_on(handlers: Handlers, event_type: type[ev.Event], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``handlers`` die (as a killed worker would) when it records an ``event_type``."""
    append = handlers._append

    async def dying(pool: str, vm: str, event: ev.Event, meta: Meta) -> bool:
        if isinstance(event, event_type):
            raise ConnectionError("worker killed")
        return await append(pool, vm, event, meta)

    monkeypatch.setattr(handlers, "_append", dying)


async def test_a_disk_task_redelivered_after_it_was_recorded_adds_no_second_disk(
    redis: aioredis.Redis, prefix: str
) -> None:
    s = Setup(redis, prefix)
    vm = await s.running_vm()
    entry = await s.request(vm, ev.VmDiskRequested(size_gb=10))
    await s.handlers("a").handle(entry)
    await s.handlers("b").handle(entry, deliveries=2)  # the ack was lost: delivered again
    assert await s.disks(vm) == [10]
    assert (await s.types(vm)).count("vm.disk-added") == 1
    assert "vm.task-failed" not in await s.types(vm)


async def test_a_disk_task_redelivered_after_a_crash_is_not_repeated(
    redis: aioredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Setup(redis, prefix)
    vm = await s.running_vm()
    entry = await s.request(vm, ev.VmDiskRequested(size_gb=10))
    dying = s.handlers("a")
    _crash_on(dying, ev.VmDiskAdded, monkeypatch)
    with pytest.raises(ConnectionError):
        await dying.handle(entry)  # the disk was added, the log does not know
    await s.handlers("b").handle(entry, deliveries=2)
    assert await s.disks(vm) == [10]
    log = [r for r in await _log(redis, s.keys) if r.vm == vm]
    (failed,) = [r.event for r in log if isinstance(r.event, ev.VmTaskFailed)]
    assert failed.task == "disk"
    assert failed.error.startswith("interrupted: an earlier attempt (a at ")
    await s.handlers("c").handle(entry, deliveries=3)  # and once is enough
    assert (await s.types(vm)).count("vm.task-failed") == 1


async def test_a_redelivered_revert_that_failed_is_not_retried(redis: aioredis.Redis, prefix: str) -> None:
    s = Setup(redis, prefix)
    vm = await s.running_vm()
    entry = await s.request(vm, ev.VmRevertRequested(name="never-taken"))
    await s.handlers("a").handle(entry)
    await s.handlers("b").handle(entry, deliveries=2)
    assert (await s.types(vm)).count("vm.task-failed") == 1


async def test_a_revert_requested_before_a_return_is_refused_once_the_destroy_started(
    redis: aioredis.Redis, prefix: str
) -> None:
    s = Setup(redis, prefix)
    vm = await s.running_vm()
    entry = await s.request(vm, ev.VmRevertRequested(name="s1"))
    await s.cmds.append(POOL, [(vm, ev.VmReturned()), (vm, ev.VmDestroyStarted(worker="w"))], META)
    await s.handlers("a").handle(entry)
    log = [r for r in await _log(redis, s.keys) if r.vm == vm]
    assert "vm.reverted" not in [r.type for r in log]
    (failed,) = [r.event for r in log if isinstance(r.event, ev.VmTaskFailed)]
    assert (failed.task, failed.error) == ("revert", f"refused: VM {vm} is being destroyed (destroying)")


async def test_a_disk_task_on_a_returned_vm_calls_no_provider(redis: aioredis.Redis, prefix: str) -> None:
    s = Setup(redis, prefix)
    vm = await s.running_vm()
    entry = await s.request(vm, ev.VmDiskRequested(size_gb=5))
    await s.cmds.append(POOL, [(vm, ev.VmReturned())], META)
    await s.handlers("a").handle(entry)
    assert await s.disks(vm) == []
    assert (await s.types(vm))[-1] == "vm.task-failed"


async def test_a_checkout_labels_the_vm_with_its_user(redis: aioredis.Redis, prefix: str) -> None:
    s = Setup(redis, prefix)
    vm = await s.running_vm()
    (checkout,) = [r for r in await _log(redis, s.keys) if r.type == "vm.checked-out"]
    await s.handlers("a").handle(
        msgspec.structs.replace(checkout, event=ev.VmCheckedOut(lifetime=1, token_user="alice"))
    )
    record = await s.provider.inspect(TARGET, vm)
    assert record is not None
    assert record.tags == {"token-user": "alice"}
    assert (await s.types(vm))[-1] == "vm.checked-out"  # labels are not events, and nothing migrated
