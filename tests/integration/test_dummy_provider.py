"""The dummy provider against real Redis: the provider contract, then the simulator's own knobs."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest
import redis.asyncio as aioredis

from commands.provider import PoolTarget, Provider, ProviderError
from providers import DummyProvider
from providers.dummy import HOSTS, KNOBS, validate_knobs
from tests.contract.provider_contract import ProviderContract, wait_ready

POOL = PoolTarget(name="debian-12-x86_64", template="templates/debian-12")


class Make(Protocol):
    def __call__(
        self,
        *,
        name: str = ...,
        sleep: Callable[[float], Awaitable[None]] | None = ...,
        clock: Callable[[], float] | None = ...,
        **options: Any,
    ) -> DummyProvider: ...


class RecordingSleep:
    """An injected sleep that records the delays asked for and only yields to the loop."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


class GateSleep:
    """An injected sleep that blocks until the test opens the gate (to observe a VM mid-operation)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.entered.set()
        await self.gate.wait()


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make(redis: aioredis.Redis, prefix: str) -> Make:
    """Build dummy providers sharing this test's Redis and prefix (one simulated cloud)."""

    def build(
        *,
        name: str = "dummy",
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
        **options: Any,
    ) -> DummyProvider:
        return DummyProvider(
            name,
            redis,
            prefix=prefix,
            options=options,
            sleep=sleep or RecordingSleep(),
            clock=clock or FakeClock(),
        )

    return build


class TestDummyProviderContract(ProviderContract):
    ready_timeout = 5.0

    @pytest.fixture
    def provider(self, redis: aioredis.Redis, prefix: str) -> DummyProvider:
        return DummyProvider("dummy", redis, prefix=prefix, options={})

    @pytest.fixture
    def pool(self) -> PoolTarget:
        return POOL


class TestDummyProviderContractWithDelays(ProviderContract):
    """The same contract with real (tiny) delays and a boot time, so readiness is actually polled."""

    ready_timeout = 5.0
    poll_interval = 0.01

    @pytest.fixture
    def provider(self, redis: aioredis.Redis, prefix: str) -> DummyProvider:
        delays = {knob: 0.01 for knob in KNOBS if knob.endswith("_time")}
        return DummyProvider("dummy", redis, prefix=prefix, options={**delays, "boot_time": 0.05, "seed": 7})

    @pytest.fixture
    def pool(self) -> PoolTarget:
        return POOL


def test_is_a_provider(make: Make) -> None:
    provider: Provider = make()
    assert isinstance(provider, Provider)
    assert DummyProvider.TYPE == "dummy"


# -- failure knobs ------------------------------------------------------------------------------------------


async def test_createvm_failure_leaves_no_vm(make: Make) -> None:
    provider = make(createvm_fail_percent=100)
    with pytest.raises(ProviderError, match=r"^Dummy Failure for createvm_fail_percent$") as info:
        await provider.create_vm(POOL, "vm1")
    assert not info.value.permanent
    assert await provider.list_vms(POOL) == []
    assert await provider.get_vm(POOL, "vm1") is None


async def test_vmready_failure_raises_and_the_vm_stays_unready(make: Make) -> None:
    await make().create_vm(POOL, "vm1")
    with pytest.raises(ProviderError, match="Dummy Failure for vmready_fail_percent"):
        await make(vmready_fail_percent=100).vm_ready(POOL, "vm1")
    record = await make().inspect(POOL, "vm1")
    assert record is not None
    assert not record.ready
    assert await make().vm_ready(POOL, "vm1")  # the next poll rolls again (here: knob off)


async def test_destroyvm_failure_leaves_the_vm_powered_off(make: Make) -> None:
    await make().create_vm(POOL, "vm1")
    with pytest.raises(ProviderError, match="Dummy Failure for destroyvm_fail_percent"):
        await make(destroyvm_fail_percent=100).destroy_vm(POOL, "vm1")
    info = await make().get_vm(POOL, "vm1")
    assert info is not None
    assert not info.powered_on
    await make().destroy_vm(POOL, "vm1")
    assert await make().list_vms(POOL) == []


@pytest.mark.parametrize("op", ["createdisk", "createsnapshot", "revertsnapshot", "migratevm"])
async def test_operation_failure_changes_nothing(make: Make, op: str) -> None:
    setup = make()
    await setup.create_vm(POOL, "vm1")
    await setup.create_snapshot(POOL, "vm1", "snap")
    before = await setup.inspect(POOL, "vm1")
    knobs: dict[str, Any] = {f"{op}_fail_percent": 100, "migratevm_couldmove_percent": 100}
    failing = make(**knobs)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "createdisk": lambda: failing.create_disk(POOL, "vm1", 20),
        "createsnapshot": lambda: failing.create_snapshot(POOL, "vm1", "other"),
        "revertsnapshot": lambda: failing.revert_snapshot(POOL, "vm1", "snap"),
        "migratevm": lambda: failing.migrate_vm(POOL, "vm1"),
    }
    with pytest.raises(ProviderError, match=rf"^Dummy Failure for {op}_fail_percent$"):
        await calls[op]()
    assert await setup.inspect(POOL, "vm1") == before


async def test_pool_options_override_provider_knobs(make: Make) -> None:
    failing_pool = PoolTarget(name="flaky", options={"createvm_fail_percent": 100})
    healthy_pool = PoolTarget(name="fixed", options={"createvm_fail_percent": 0})
    with pytest.raises(ProviderError, match="createvm_fail_percent"):
        await make().create_vm(failing_pool, "vm1")
    assert (await make(createvm_fail_percent=100).create_vm(healthy_pool, "vm2")).name == "vm2"


# -- delays, boot time, cloning ------------------------------------------------------------------------------


@pytest.mark.parametrize("knob", [knob for knob in KNOBS if knob.endswith("_time") and knob != "boot_time"])
async def test_delays_are_uniform_up_to_the_max(make: Make, knob: str) -> None:
    await make().create_vm(POOL, "vm1")
    await make().create_snapshot(POOL, "vm1", "snap")
    sleep = RecordingSleep()
    knobs: dict[str, Any] = {knob: 0.05, "migratevm_couldmove_percent": 100}
    provider = make(sleep=sleep, **knobs)
    for _ in range(20):
        match knob:
            case "createvm_max_time":
                await make().destroy_vm(POOL, "vm1")
                await provider.create_vm(POOL, "vm1")
            case "destroyvm_max_time" | "destroyvm_max_shutdown_time":
                await make().create_vm(POOL, "vm1")
                await provider.destroy_vm(POOL, "vm1")
            case "createdisk_max_time":
                await provider.create_disk(POOL, "vm1", 1)
            case "createsnapshot_max_time":
                await provider.create_snapshot(POOL, "vm1", "snap")
            case "revertsnapshot_max_time":
                await provider.revert_snapshot(POOL, "vm1", "snap")
            case "migratevm_max_time":
                await provider.migrate_vm(POOL, "vm1")
    assert len(sleep.calls) == 20
    assert all(0 <= s <= 0.05 for s in sleep.calls)
    assert len(set(sleep.calls)) > 1  # random, not a constant


async def test_no_delay_knob_means_no_sleep(make: Make) -> None:
    sleep = RecordingSleep()
    provider = make(sleep=sleep)
    await provider.create_vm(POOL, "vm1")
    await provider.create_disk(POOL, "vm1", 1)
    await provider.destroy_vm(POOL, "vm1")
    assert sleep.calls == []


async def test_destroy_of_a_running_vm_waits_for_shutdown_then_delete(make: Make) -> None:
    await make().create_vm(POOL, "vm1")
    sleep = RecordingSleep()
    await make(sleep=sleep, destroyvm_max_shutdown_time=0.05, destroyvm_max_time=0.05).destroy_vm(POOL, "vm1")
    assert len(sleep.calls) == 2


async def test_real_sleep_delays_are_honoured(redis: aioredis.Redis, prefix: str) -> None:
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await asyncio.sleep(seconds)

    provider = DummyProvider(
        "dummy", redis, prefix=prefix, options={"createvm_max_time": 0.05, "seed": 1}, sleep=sleep
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await provider.create_vm(POOL, "vm1")
    elapsed = loop.time() - started
    assert len(asked) == 1
    assert 0 < asked[0] <= 0.05
    assert asked[0] * 0.9 <= elapsed < 2.0


async def test_boot_time_follows_the_injected_clock(make: Make) -> None:
    clock = FakeClock()
    provider = make(clock=clock, boot_time=30)
    await provider.create_vm(POOL, "vm1")
    assert not await provider.vm_ready(POOL, "vm1")
    clock.now += 29.9
    assert not await provider.vm_ready(POOL, "vm1")
    clock.now += 0.2
    assert await provider.vm_ready(POOL, "vm1")


async def test_unknown_vm_is_not_ready(make: Make) -> None:
    assert not await make().vm_ready(POOL, "nope")


async def test_a_cloning_vm_is_in_the_inventory_but_not_ready(make: Make) -> None:
    gate = GateSleep()
    cloning = asyncio.create_task(make(sleep=gate, createvm_max_time=10).create_vm(POOL, "vm1"))
    await asyncio.wait_for(gate.entered.wait(), timeout=5)
    observer = make()
    assert await observer.list_vms(POOL) == ["vm1"]
    info = await observer.get_vm(POOL, "vm1")
    assert info is not None
    assert not info.powered_on
    assert not await observer.vm_ready(POOL, "vm1")
    assert (await observer.create_vm(POOL, "vm1")).name == "vm1"  # adopts the half-made VM
    gate.gate.set()
    assert (await asyncio.wait_for(cloning, timeout=5)).powered_on
    assert await observer.vm_ready(POOL, "vm1")


async def test_cancelled_create_leaves_no_vm(make: Make) -> None:
    gate = GateSleep()
    cloning = asyncio.create_task(make(sleep=gate, createvm_max_time=10).create_vm(POOL, "vm1"))
    await asyncio.wait_for(gate.entered.wait(), timeout=5)
    cloning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cloning
    assert await make().list_vms(POOL) == []


async def test_destroy_while_cloning_fails_the_create(make: Make) -> None:
    gate = GateSleep()
    cloning = asyncio.create_task(make(sleep=gate, createvm_max_time=10).create_vm(POOL, "vm1"))
    await asyncio.wait_for(gate.entered.wait(), timeout=5)
    await make().destroy_vm(POOL, "vm1")
    gate.gate.set()
    with pytest.raises(ProviderError, match="destroyed while it was being cloned"):
        await asyncio.wait_for(cloning, timeout=5)
    assert await make().list_vms(POOL) == []


# -- shared inventory, adoption, quota ----------------------------------------------------------------------


async def test_instances_on_one_prefix_share_the_inventory(make: Make) -> None:
    first, second = make(), make()
    created = await first.create_vm(POOL, "vm1")
    assert await second.list_vms(POOL) == ["vm1"]
    assert await second.get_vm(POOL, "vm1") == created
    await second.destroy_vm(POOL, "vm1")
    assert await first.get_vm(POOL, "vm1") is None


async def test_other_provider_names_and_prefixes_are_other_clouds(
    make: Make, redis: aioredis.Redis, prefix: str
) -> None:
    await make().create_vm(POOL, "vm1")
    assert await make(name="dummy2").list_vms(POOL) == []
    other = DummyProvider("dummy", redis, prefix=f"{prefix}x", options={})
    assert await other.list_vms(POOL) == []


async def test_concurrent_creates_of_one_name_make_one_vm(make: Make) -> None:
    results = await asyncio.gather(*(make().create_vm(POOL, "vm1") for _ in range(10)))
    assert {r.name for r in results} == {"vm1"}
    assert await make().list_vms(POOL) == ["vm1"]


async def test_adopting_keeps_the_existing_vm(make: Make) -> None:
    sleep = RecordingSleep()
    provider = make(sleep=sleep, createvm_max_time=0.05)
    await provider.create_vm(POOL, "vm1")
    await provider.create_disk(POOL, "vm1", 10)
    await make(createvm_fail_percent=100, sleep=sleep, createvm_max_time=0.05).create_vm(POOL, "vm1")
    record = await provider.inspect(POOL, "vm1")
    assert record is not None
    assert record.disks == [10]
    assert len(sleep.calls) == 1  # adopting neither waits nor rolls for failure


async def test_quota_is_enforced_per_pool(make: Make) -> None:
    provider = make(quota=2)
    await provider.create_vm(POOL, "vm1")
    await provider.create_vm(POOL, "vm2")
    with pytest.raises(ProviderError, match="quota exceeded") as info:
        await provider.create_vm(POOL, "vm3")
    assert not info.value.permanent
    assert (await provider.create_vm(POOL, "vm2")).name == "vm2"  # adopting needs no room
    await provider.create_vm(PoolTarget(name="elsewhere"), "vm3")  # another pool has its own quota
    await provider.destroy_vm(POOL, "vm1")
    await provider.create_vm(POOL, "vm3")
    assert await provider.list_vms(POOL) == ["vm2", "vm3"]


async def test_quota_holds_under_concurrency(make: Make) -> None:
    results = await asyncio.gather(
        *(make(quota=3).create_vm(POOL, f"vm{i}") for i in range(12)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(isinstance(r, ProviderError) for r in results if isinstance(r, BaseException))
    assert len(await make().list_vms(POOL)) == 3


async def test_pool_quota_override(make: Make) -> None:
    tight = PoolTarget(name="tight", options={"quota": 1})
    provider = make(quota=10)
    await provider.create_vm(tight, "vm1")
    with pytest.raises(ProviderError, match="quota exceeded"):
        await provider.create_vm(tight, "vm2")


# -- seeded randomness ---------------------------------------------------------------------------------------


async def _outcomes(make: Make, seed: int, pool: PoolTarget) -> tuple[list[bool], list[float]]:
    sleep = RecordingSleep()
    provider = make(sleep=sleep, seed=seed, createvm_fail_percent=50, createvm_max_time=1.0)
    outcomes = []
    for i in range(30):
        try:
            await provider.create_vm(pool, f"vm{i}")
            outcomes.append(True)
        except ProviderError:
            outcomes.append(False)
    return outcomes, sleep.calls


async def test_same_seed_same_failures_and_delays(make: Make) -> None:
    first = await _outcomes(make, 42, PoolTarget(name="a"))
    second = await _outcomes(make, 42, PoolTarget(name="b"))
    other = await _outcomes(make, 43, PoolTarget(name="c"))
    assert first == second
    assert True in first[0]
    assert False in first[0]
    assert other != first


# -- get_vm knobs, migration, placement, records -------------------------------------------------------------


async def test_getvm_rename_persists(make: Make) -> None:
    await make().create_vm(POOL, "vm1")
    renamed = await make(getvm_rename_percent=100).get_vm(POOL, "vm1")
    assert renamed is not None
    assert renamed.hostname == "DUMMYvm1"
    again = await make().get_vm(POOL, "vm1")
    assert again is not None
    assert again.hostname == "DUMMYvm1"


async def test_getvm_poweroff_persists(make: Make) -> None:
    await make().create_vm(POOL, "vm1")
    off = await make(getvm_poweroff_percent=100).get_vm(POOL, "vm1")
    assert off is not None
    assert not off.powered_on
    again = await make().get_vm(POOL, "vm1")
    assert again is not None
    assert not again.powered_on
    assert not await make().vm_ready(POOL, "vm1")


async def test_migrate_moves_only_when_it_could(make: Make) -> None:
    created = await make().create_vm(POOL, "vm1")
    assert await make().migrate_vm(POOL, "vm1") == created.host
    moved = await make(migratevm_couldmove_percent=100).migrate_vm(POOL, "vm1")
    assert moved in HOSTS
    assert moved != created.host
    info = await make().get_vm(POOL, "vm1")
    assert info is not None
    assert info.host == moved


async def test_migrate_missing_vm_raises(make: Make) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        await make().migrate_vm(POOL, "nope")


async def test_fake_ip_and_host_derive_from_the_name(make: Make, redis: aioredis.Redis, prefix: str) -> None:
    created = await make().create_vm(POOL, "vm1")
    other_cloud = DummyProvider("x", redis, prefix=f"{prefix}x", options={})
    elsewhere = await other_cloud.create_vm(PoolTarget(name="p"), "vm1")
    assert ipaddress.ip_address(created.ip) in ipaddress.ip_network("10.0.0.0/8")
    assert created.host in HOSTS
    assert (created.ip, created.host) == (elsewhere.ip, elsewhere.host)
    other = await make().create_vm(POOL, "vm2")
    assert other.ip != created.ip
    assert created.template == POOL.template
    assert created.hostname == "vm1"


async def test_disks_and_snapshots_are_recorded(make: Make) -> None:
    provider = make()
    await provider.create_vm(POOL, "vm1")
    await provider.create_disk(POOL, "vm1", 10)
    await provider.create_disk(POOL, "vm1", 20)
    await provider.create_snapshot(POOL, "vm1", "s1")
    await provider.create_snapshot(POOL, "vm1", "s1")
    record = await provider.inspect(POOL, "vm1")
    assert record is not None
    assert record.disks == [10, 20]
    assert record.snapshots == ["s1"]
    with pytest.raises(ProviderError) as info:
        await provider.create_disk(POOL, "vm1", 0)
    assert info.value.permanent


async def test_purge_returns_exactly_the_deleted_vms(make: Make) -> None:
    provider = make()
    await provider.create_vm(POOL, "keep")
    await provider.create_vm(PoolTarget(name="old1"), "a")
    await provider.create_vm(PoolTarget(name="old1"), "b")
    await provider.create_vm(PoolTarget(name="old2"), "c")
    await provider.create_vm(PoolTarget(name="kept-by-allowlist"), "d")
    assert await provider.purge_unconfigured([POOL], ["kept-by-allowlist"]) == ["a", "b", "c"]
    assert await provider.purge_unconfigured([POOL], ["kept-by-allowlist"]) == []
    assert await provider.list_vms(POOL) == ["keep"]


async def test_works_with_a_decoding_client(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        provider = DummyProvider("dummy", client, prefix=prefix, options={"boot_time": 0})
        await provider.create_vm(POOL, "vm1")
        await provider.create_disk(POOL, "vm1", 5)
        await wait_ready(provider, POOL, "vm1", within=5)
        assert await provider.list_vms(POOL) == ["vm1"]
        assert await provider.purge_unconfigured([], []) == ["vm1"]
    finally:
        await client.aclose()


# -- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("createvm_fail_percent", "10"),
        ("createvm_max_time", True),
        ("boot_time", -1),
        ("migratevm_fail_percent", 101),
        ("seed", 1.5),
        ("quota", "3"),
        ("destroyvm_max_time", float("nan")),
        ("getvm_rename_percent", [5]),
    ],
)
def test_bad_knobs_are_rejected_by_name(redis: aioredis.Redis, prefix: str, knob: str, value: object) -> None:
    with pytest.raises(ValueError, match=knob):
        DummyProvider("dummy", redis, prefix=prefix, options={knob: value})


def test_good_knobs_and_foreign_keys_are_accepted() -> None:
    options = {
        "createvm_max_time": 2,
        "boot_time": 0.5,
        "createvm_fail_percent": None,
        "seed": -3,
        "quota": 0,
        "provider_class": "dummy",
        "filename": "/tmp/x.yaml",
    }
    assert validate_knobs(options) == {"createvm_max_time": 2, "boot_time": 0.5, "seed": -3, "quota": 0}


async def test_bad_pool_knob_is_a_permanent_provider_error(make: Make) -> None:
    with pytest.raises(ProviderError, match="createvm_fail_percent") as info:
        await make().create_vm(PoolTarget(name="bad", options={"createvm_fail_percent": "often"}), "vm1")
    assert info.value.permanent
