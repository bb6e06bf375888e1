"""The provider contract: what every :class:`commands.provider.Provider` must do, as pytest tests.

A provider's test module subclasses :class:`ProviderContract` (the class name does not start with ``Test``, so
pytest collects only the subclass) and supplies two fixtures, ``provider`` and ``pool``::

    class TestDummyProviderContract(ProviderContract):
        @pytest.fixture
        def provider(self, redis, prefix) -> DummyProvider:
            return DummyProvider("dummy", redis, prefix=prefix, options={})

        @pytest.fixture
        def pool(self) -> PoolTarget:
            return PoolTarget(name="contract-pool", template="templates/debian-12")

Optional overrides: the ``other_pool`` and ``third_pool`` fixtures (defaults derive names from ``pool``), the
class attributes ``ready_timeout`` and ``poll_interval`` (seconds). VMs the tests create are destroyed at
teardown. Warning: ``test_purge_unconfigured_*`` purges everything the provider holds outside the test pools,
so point a real provider at a scratch folder or project.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from commands.provider import PoolTarget, Provider, ProviderError, VmInfo

__all__ = ["ProviderContract", "VmTracker", "wait_ready"]


async def wait_ready(
    provider: Provider, pool: PoolTarget, vm: str, *, within: float, interval: float = 0.05
) -> None:
    """Poll ``vm_ready`` until it is true; fail the test when ``within`` seconds pass first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await provider.vm_ready(pool, vm):
        if loop.time() >= deadline:
            pytest.fail(f"{vm} in {pool.name} not ready within {within} s")
        await asyncio.sleep(interval)


class VmTracker:
    """Hands out fresh VM names and remembers them so teardown can destroy whatever a test left behind."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.made: list[tuple[PoolTarget, str]] = []

    def name(self, pool: PoolTarget) -> str:
        """Return a new unique VM name (short, lowercase, like vmpooler's) tracked for ``pool``."""
        vm = f"ct{uuid.uuid4().hex[:13]}"
        self.made.append((pool, vm))
        return vm

    async def create(self, pool: PoolTarget) -> tuple[str, VmInfo]:
        """Create a fresh tracked VM in ``pool``; return its name and what ``create_vm`` returned."""
        vm = self.name(pool)
        return vm, await self.provider.create_vm(pool, vm)

    async def cleanup(self) -> None:
        """Destroy every tracked VM, ignoring provider errors (the test already has its verdict)."""
        for pool, vm in self.made:
            with contextlib.suppress(ProviderError):
                await self.provider.destroy_vm(pool, vm)


class ProviderContract:
    """Tests every provider must pass; subclass and supply the ``provider`` and ``pool`` fixtures."""

    ready_timeout: float = 30.0
    poll_interval: float = 0.05

    @pytest.fixture
    def other_pool(self, pool: PoolTarget) -> PoolTarget:
        """A second configured pool, to check that pools do not see each other's VMs."""
        return msgspec.structs.replace(pool, name=f"{pool.name}-other")

    @pytest.fixture
    def third_pool(self, pool: PoolTarget) -> PoolTarget:
        """A pool used only by the purge tests (created, then left out of the configuration)."""
        return msgspec.structs.replace(pool, name=f"{pool.name}-gone")

    @pytest.fixture
    async def vms(self, provider: Provider) -> AsyncIterator[VmTracker]:
        """Fresh VM names, destroyed at teardown."""
        tracker = VmTracker(provider)
        yield tracker
        await tracker.cleanup()

    async def wait_ready(self, provider: Provider, pool: PoolTarget, vm: str) -> None:
        """Poll until ``vm`` is ready, within ``ready_timeout``."""
        await wait_ready(provider, pool, vm, within=self.ready_timeout, interval=self.poll_interval)

    async def test_satisfies_the_protocol(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)
        assert isinstance(provider.name, str)
        assert provider.name

    async def test_lifecycle(self, provider: Provider, pool: PoolTarget, vms: VmTracker) -> None:
        vm, created = await vms.create(pool)
        assert created.name == vm
        got = await provider.get_vm(pool, vm)
        assert got is not None
        assert got.name == vm
        if pool.template:
            assert got.template == pool.template
        assert vm in await provider.list_vms(pool)
        await self.wait_ready(provider, pool, vm)
        ready = await provider.get_vm(pool, vm)
        assert ready is not None
        assert ready.powered_on
        await provider.destroy_vm(pool, vm)
        assert await provider.get_vm(pool, vm) is None
        assert vm not in await provider.list_vms(pool)

    async def test_create_twice_adopts(self, provider: Provider, pool: PoolTarget, vms: VmTracker) -> None:
        vm, _ = await vms.create(pool)
        await self.wait_ready(provider, pool, vm)
        again = await provider.create_vm(pool, vm)
        assert again.name == vm
        assert (await provider.list_vms(pool)).count(vm) == 1
        assert await provider.vm_ready(pool, vm)  # adopted as it was, not cloned afresh

    async def test_destroy_missing_succeeds(
        self, provider: Provider, pool: PoolTarget, vms: VmTracker
    ) -> None:
        vm, _ = await vms.create(pool)
        await provider.destroy_vm(pool, vm)
        await provider.destroy_vm(pool, vm)
        await provider.destroy_vm(pool, vms.name(pool))
        assert vm not in await provider.list_vms(pool)

    async def test_unknown_pool_and_vm(self, provider: Provider, pool: PoolTarget, vms: VmTracker) -> None:
        unknown = PoolTarget(name=f"nopool{uuid.uuid4().hex[:8]}", template=pool.template)
        assert await provider.get_vm(unknown, "novm") is None
        assert await provider.list_vms(unknown) == []
        vm, _ = await vms.create(pool)
        assert await provider.get_vm(pool, vms.name(pool)) is None
        assert await provider.get_vm(unknown, vm) is None

    async def test_create_disk(self, provider: Provider, pool: PoolTarget, vms: VmTracker) -> None:
        vm, _ = await vms.create(pool)
        await self.wait_ready(provider, pool, vm)
        await provider.create_disk(pool, vm, 10)
        assert await provider.get_vm(pool, vm) is not None

    async def test_create_disk_on_missing_vm_raises(
        self, provider: Provider, pool: PoolTarget, vms: VmTracker
    ) -> None:
        with pytest.raises(ProviderError):
            await provider.create_disk(pool, vms.name(pool), 10)

    async def test_snapshot_and_revert(self, provider: Provider, pool: PoolTarget, vms: VmTracker) -> None:
        vm, _ = await vms.create(pool)
        await self.wait_ready(provider, pool, vm)
        await provider.create_snapshot(pool, vm, "before-tests")
        await provider.revert_snapshot(pool, vm, "before-tests")
        assert await provider.get_vm(pool, vm) is not None

    async def test_revert_unknown_snapshot_raises(
        self, provider: Provider, pool: PoolTarget, vms: VmTracker
    ) -> None:
        vm, _ = await vms.create(pool)
        await self.wait_ready(provider, pool, vm)
        with pytest.raises(ProviderError):
            await provider.revert_snapshot(pool, vm, "never-taken")

    async def test_migrate_returns_host(self, provider: Provider, pool: PoolTarget, vms: VmTracker) -> None:
        vm, _ = await vms.create(pool)
        await self.wait_ready(provider, pool, vm)
        host = await provider.migrate_vm(pool, vm)
        assert isinstance(host, str)
        got = await provider.get_vm(pool, vm)
        assert got is not None
        assert got.host == host

    async def test_pools_are_isolated(
        self, provider: Provider, pool: PoolTarget, other_pool: PoolTarget, vms: VmTracker
    ) -> None:
        mine, _ = await vms.create(pool)
        theirs, _ = await vms.create(other_pool)
        assert await provider.get_vm(other_pool, mine) is None
        assert mine not in await provider.list_vms(other_pool)
        assert theirs not in await provider.list_vms(pool)
        await provider.destroy_vm(other_pool, mine)  # the wrong pool: must not touch ``pool``'s VM
        assert await provider.get_vm(pool, mine) is not None

    async def test_purge_unconfigured_deletes_only_unconfigured(
        self, provider: Provider, pool: PoolTarget, third_pool: PoolTarget, vms: VmTracker
    ) -> None:
        kept, _ = await vms.create(pool)
        stray, _ = await vms.create(third_pool)
        deleted = await provider.purge_unconfigured([pool], [])
        assert any(stray in item for item in deleted)  # a VM name, or a path ending in it
        assert not any(kept in item for item in deleted)
        assert await provider.get_vm(third_pool, stray) is None
        assert stray not in await provider.list_vms(third_pool)
        assert await provider.get_vm(pool, kept) is not None

    async def test_purge_unconfigured_spares_allowlisted(
        self, provider: Provider, pool: PoolTarget, third_pool: PoolTarget, vms: VmTracker
    ) -> None:
        stray, _ = await vms.create(third_pool)
        deleted = await provider.purge_unconfigured([pool], [third_pool.name])
        assert not any(stray in item for item in deleted)
        assert await provider.get_vm(third_pool, stray) is not None
