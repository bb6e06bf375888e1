"""Host selection at clone time and migration at checkout, against vcsim with uneven host usage.

vcsim gives every host the same usage figures, so our launcher's ``-host-usage`` sets them: in cluster
``DC0_C0``, H0 is busy (80 % CPU), H1 idle (10 %) and H2 in between (40 %). The cluster's average CPU is
43 %, so the least-used hosts are H1 then H2, and clones alternate between them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")

from pyVmomi import vim

from commands.provider import PoolTarget, ProviderError
from providers.vsphere import VsphereProvider
from providers.vsphere.connection import wait_task
from providers.vsphere.ops import Target, VmOps
from providers.vsphere.slots import RedisSlots
from tests.contract.provider_contract import VmTracker
from tests.vcsim import (
    TEMPLATE,
    VcsimServer,
    provider_options,
    vcsim_with_template,
)
from vmpooler.redis_server import free_port

USAGE = "DC0_C0_H0=80:40,DC0_C0_H1=10:20,DC0_C0_H2=40:30"
_vim: Any = vim


@pytest.fixture(scope="module")
def vcsim() -> Iterator[VcsimServer]:
    with vcsim_with_template("-host-usage", USAGE) as server:
        yield server


def _pool(name: str) -> PoolTarget:
    return PoolTarget(
        name=name, template=TEMPLATE, clone_target="DC0_C0", options={"folder": f"vmpooler-place/{name}"}
    )


@pytest.fixture
async def make(vcsim: VcsimServer) -> AsyncIterator[Any]:
    made: list[VsphereProvider] = []

    def build(
        global_options: dict[str, Any] | None = None,
        metrics: Any = None,
        redis: aioredis.Redis | None = None,
        key_prefix: str = "vmpooler",
        **extra: Any,
    ) -> VsphereProvider:
        options = provider_options(vcsim, **extra)
        provider = VsphereProvider(
            "vsphere",
            options,
            global_options=global_options,
            metrics=metrics,
            redis=redis,
            key_prefix=key_prefix,
            executor_workers=4,
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


async def _relocate(provider: VsphereProvider, pool: PoolTarget, vm: str, host: str) -> None:
    def run(ops: VmOps) -> None:
        found = ops.require_vm(Target(provider._placement(pool), vm))
        target = ops.content.searchIndex.FindByInventoryPath(f"DC0/host/DC0_C0/{host}")
        wait_task(found.RelocateVM_Task(spec=_vim.vm.RelocateSpec(host=target)))

    await provider._call(run)


async def _host(provider: VsphereProvider, pool: PoolTarget, vm: str) -> str:
    info = await provider.get_vm(pool, vm)
    assert info is not None
    return info.host


async def test_clones_go_to_the_least_used_hosts_in_turn(make: Any) -> None:
    provider = make(manage_host_selection=True)
    pool = _pool("place-turns")
    tracker = VmTracker(provider)
    try:
        hosts = [(await tracker.create(pool))[1].host for _ in range(4)]
        assert hosts == ["DC0_C0_H1", "DC0_C0_H2", "DC0_C0_H1", "DC0_C0_H2"]
        assert provider.hosts.refreshes == 1  # one utilisation read per host_selection_max_age
    finally:
        await tracker.cleanup()


async def test_without_host_selection_vcenter_places_the_clone(make: Any) -> None:
    provider = make()
    pool = _pool("place-off")
    tracker = VmTracker(provider)
    try:
        _, info = await tracker.create(pool)
        assert info.host.startswith("DC0_C0_H")  # a host of the clone target, chosen by vCenter
        assert provider.hosts.refreshes == 0
    finally:
        await tracker.cleanup()


async def test_utilization_limit_and_maintenance_exclude_hosts(make: Any) -> None:
    limited = make(manage_host_selection=True, utilization_limit=30)  # H2 (40 %) and H0 are over it
    pool = _pool("place-limit")
    tracker = VmTracker(limited)
    try:
        hosts = {(await tracker.create(pool))[1].host for _ in range(2)}
        assert hosts == {"DC0_C0_H1"}

        def maintenance(ops: VmOps, enter: bool) -> None:
            host = ops.content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0/DC0_C0_H1")
            wait_task(
                host.EnterMaintenanceMode_Task(timeout=0)
                if enter
                else host.ExitMaintenanceMode_Task(timeout=0)
            )

        fresh = make(manage_host_selection=True)
        await fresh._call(lambda ops: maintenance(ops, True))
        try:
            tracker.provider = fresh
            hosts = {(await tracker.create(pool))[1].host for _ in range(2)}
            assert hosts == {"DC0_C0_H2"}  # H1 in maintenance; H2 is now the only one at or below average
        finally:
            await fresh._call(lambda ops: maintenance(ops, False))
    finally:
        await tracker.cleanup()


async def test_global_config_keys_apply_unless_the_provider_block_overrides(make: Any) -> None:
    provider = make(
        global_options={
            "manage_host_selection": True,
            "circuit_breaker_failure_threshold": 7,
            "connection_pool_timeout_initial": 12,
            "migration_limit": 3,
            "create_folders": False,
        },
        create_folders=True,
    )
    assert provider.breaker is not None
    assert provider.breaker.failure_threshold == 7
    assert provider.timeout.current == 12
    assert provider.migrations.limit == 3
    pool = _pool("place-global")
    tracker = VmTracker(provider)
    try:
        _, info = await tracker.create(pool)  # the folder is created: the provider block wins
        assert info.host == "DC0_C0_H1"
    finally:
        await tracker.cleanup()


class RecordingMetrics:
    """A metrics sink that keeps what it is given."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.timings: dict[str, list[float]] = {}

    def increment(self, label: str, n: int = 1) -> None:
        self.counts[label] = self.counts.get(label, 0) + n

    def gauge(self, label: str, value: float) -> None:
        raise AssertionError(f"unexpected gauge {label}")

    def timing(self, label: str, ms: float) -> None:
        self.timings.setdefault(label, []).append(ms)


async def test_migrate_moves_a_vm_off_a_busy_host(make: Any) -> None:
    metrics = RecordingMetrics()
    provider = make(manage_host_selection=True, migration_limit=2, metrics=metrics)
    pool = _pool("migrate-busy")
    tracker = VmTracker(provider)
    try:
        vm, info = await tracker.create(pool)
        assert info.host == "DC0_C0_H1"
        await _relocate(provider, pool, vm, "DC0_C0_H0")
        moved_to = await provider.migrate_vm(pool, vm)
        assert moved_to in {"DC0_C0_H1", "DC0_C0_H2"}
        assert await _host(provider, pool, vm) == moved_to
        assert await provider.migrations.acquire("a")  # the slot was given back
        assert metrics.counts == {"connect.open": 1, "migrate_from.DC0_C0_H0": 1, f"migrate_to.{moved_to}": 1}
        assert len(metrics.timings["migrate.migrate-busy"]) == 1
        assert await provider.migrate_vm(pool, vm) == moved_to  # no move, no migration metrics
        assert metrics.counts["migrate_from.DC0_C0_H0"] == 1
    finally:
        await tracker.cleanup()


async def test_migrate_leaves_a_vm_on_a_least_used_host(make: Any) -> None:
    provider = make(migration_limit=2)
    pool = _pool("migrate-stay")
    tracker = VmTracker(provider)
    try:
        vm, _ = await tracker.create(pool)
        await _relocate(provider, pool, vm, "DC0_C0_H2")  # at or below average: no reason to move
        assert await provider.migrate_vm(pool, vm) == "DC0_C0_H2"
        assert await _host(provider, pool, vm) == "DC0_C0_H2"
    finally:
        await tracker.cleanup()


@pytest.mark.parametrize("limit", [0, 1])
async def test_migrate_reports_the_host_when_disabled_or_at_the_limit(make: Any, limit: int) -> None:
    provider = make(migration_limit=limit)
    pool = _pool(f"migrate-limit{limit}")
    tracker = VmTracker(provider)
    try:
        vm, _ = await tracker.create(pool)
        await _relocate(provider, pool, vm, "DC0_C0_H0")
        if limit:
            assert await provider.migrations.acquire("other")  # a migration in flight takes the only slot
        assert await provider.migrate_vm(pool, vm) == "DC0_C0_H0"
        assert await _host(provider, pool, vm) == "DC0_C0_H0"
    finally:
        await tracker.cleanup()


async def test_logins_are_counted(make: Any) -> None:
    metrics = RecordingMetrics()
    provider = make(metrics=metrics)
    assert await provider.list_vms(_pool("place-count")) == []
    bad = make(metrics=metrics, password="wrong")
    with pytest.raises(ProviderError):
        await bad.list_vms(_pool("place-count"))
    assert metrics.counts == {"connect.open": 1, "connect.fail": 1}


async def test_vsphere_timeout_bounds_each_vcenter_socket(make: Any) -> None:
    assert make(vsphere_timeout=7).connections.socket_timeout == 7
    default = make()
    assert default.connections.socket_timeout == default.timeout.maximum
    with pytest.raises(ValueError, match="vsphere_timeout"):
        make(vsphere_timeout=-1)


async def test_a_login_that_may_pass_is_retried_max_tries_times(make: Any) -> None:
    metrics = RecordingMetrics()
    # nothing listens on the port: a reason that may pass, so vmpooler's back-off applies
    gone = make(metrics=metrics, port=free_port(), global_options={"max_tries": 3, "retry_factor": 0.01})
    with pytest.raises(ProviderError):
        await gone.list_vms(_pool("place-retry"))
    assert metrics.counts == {"connect.fail": 3}
    bad = make(metrics=metrics, password="wrong", max_tries=3, retry_factor=0.01)
    with pytest.raises(ProviderError):
        await bad.list_vms(_pool("place-retry"))
    assert metrics.counts == {"connect.fail": 4}  # wrong credentials are not retried


async def test_migration_limit_is_shared_by_every_process_through_redis(
    make: Any, redis: aioredis.Redis, prefix: str
) -> None:
    one = make(migration_limit=1, redis=redis, key_prefix=prefix)
    other = make(migration_limit=1, redis=redis, key_prefix=prefix)  # another worker process
    pool = _pool("migrate-shared")
    tracker = VmTracker(one)
    try:
        vm, _ = await tracker.create(pool)
        await _relocate(one, pool, vm, "DC0_C0_H0")
        assert isinstance(one.migrations, RedisSlots)
        assert await one.migrations.acquire("elsewhere")  # `one` is migrating another VM
        assert await other.migrate_vm(pool, vm) == "DC0_C0_H0"  # no slot left: it stays
        await one.migrations.release("elsewhere")
        assert await other.migrate_vm(pool, vm) in {"DC0_C0_H1", "DC0_C0_H2"}
        assert await one.migrations.holders() == []
    finally:
        await tracker.cleanup()


async def test_redis_slots_expire_and_fail_closed(redis: aioredis.Redis, prefix: str) -> None:
    now = [1000.0]
    slots = RedisSlots(redis, f"{prefix}:slots", 1, lease=60, clock=lambda: now[0])
    assert await slots.acquire("a")
    assert not await slots.acquire("b")
    now[0] += 61  # the holder died without releasing: its lease ran out
    assert await slots.acquire("b")
    assert await slots.holders() == ["b"]
    gone = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        assert not await RedisSlots(gone, "k", 1, lease=60).acquire("a")  # no Redis: no migration
        await RedisSlots(gone, "k", 1, lease=60).release("a")
    finally:
        await gone.aclose()
