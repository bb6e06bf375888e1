"""Clone options against vcsim: linked clones, template delta disks, the pool's network, folder creation.

vcsim 0.24 accepts a clone's ``diskMoveType`` and ``snapshot`` but ignores them (every clone gets fresh
disks without a parent), so the linked-clone tests check the CloneSpec the provider sent (recorded at
pyvmomi's SOAP stub, i.e. what went over the wire) and that vcsim accepted it. Delta disks, networks and
folders are checked in vcsim's inventory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")

from pyVmomi import SoapAdapter, vim

from commands.provider import PoolTarget, ProviderError
from providers.vsphere import VsphereProvider
from providers.vsphere.connection import wait_task
from providers.vsphere.ops import Target, VmOps
from tests.contract.provider_contract import VmTracker
from tests.vcsim import (
    TEMPLATE,
    VcsimServer,
    provider_options,
    vcsim_with_template,
)

_vim: Any = vim


@pytest.fixture(scope="module")
def vcsim() -> Iterator[VcsimServer]:
    with vcsim_with_template() as server:
        yield server


class CloneSpecs:
    """Records the ``spec`` of every ``CloneVM_Task`` pyvmomi sends while installed."""

    def __init__(self) -> None:
        self.specs: list[Any] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[CloneSpecs]:
        stub: Any = SoapAdapter.SoapStubAdapter
        original = stub.InvokeMethod

        def recording(adapter: Any, mo: Any, info: Any, args: Any, *rest: Any) -> Any:
            if info.wsdlName == "CloneVM_Task":
                with self._lock:
                    self.specs.append(args[2])
            return original(adapter, mo, info, args, *rest)

        stub.InvokeMethod = recording
        try:
            yield self
        finally:
            stub.InvokeMethod = original


@pytest.fixture
def clones() -> Iterator[CloneSpecs]:
    with CloneSpecs().installed() as recorder:
        yield recorder


@pytest.fixture
async def make(vcsim: VcsimServer) -> AsyncIterator[Any]:
    made: list[VsphereProvider] = []

    def build(global_options: dict[str, Any] | None = None, **extra: Any) -> VsphereProvider:
        options = provider_options(vcsim, **extra)
        provider = VsphereProvider("vsphere", options, global_options=global_options, executor_workers=4)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


def _pool(name: str, template: str = TEMPLATE, **options: Any) -> PoolTarget:
    return PoolTarget(name=name, template=template, options={"folder": f"vmpooler-co/{name}", **options})


async def _new_template(provider: VsphereProvider, name: str, *, snapshot: bool) -> str:
    """Clone vcsim's stock VM into ``templates/<name>`` (with a snapshot ``base`` if asked); its path."""

    def run(ops: VmOps) -> None:
        index = ops.content.searchIndex
        source = index.FindByInventoryPath("DC0/vm/DC0_H0_VM0")
        folder = index.FindByInventoryPath("DC0/vm/templates")
        vm = wait_task(
            source.CloneVM_Task(
                folder=folder, name=name, spec=_vim.vm.CloneSpec(location=_vim.vm.RelocateSpec())
            )
        )
        if snapshot:
            wait_task(vm.CreateSnapshot_Task(name="base", memory=False, quiesce=False))
        vm.MarkAsTemplate()

    await provider._call(run)
    return f"templates/{name}"


async def _vm(provider: VsphereProvider, pool: PoolTarget, vm: str, read: Any) -> Any:
    return await provider._call(lambda ops: read(ops.require_vm(Target(provider._placement(pool), vm))))


def _disks(vm: Any) -> list[Any]:
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


@pytest.mark.parametrize(
    ("global_linked", "pool_linked", "move"),
    [
        (False, None, "moveAllDiskBackingsAndConsolidate"),
        (True, None, "moveChildMostDiskBacking"),
        (True, False, "moveAllDiskBackingsAndConsolidate"),
        (False, True, "moveChildMostDiskBacking"),
    ],
)
async def test_linked_clone_settings_choose_the_disk_backing(
    make: Any, clones: CloneSpecs, global_linked: bool, pool_linked: bool | None, move: str
) -> None:
    provider = make(global_options={"create_linked_clones": global_linked})
    extra = {} if pool_linked is None else {"create_linked_clone": pool_linked}
    pool = _pool(f"co-linked-{global_linked}-{pool_linked}", **extra)
    tracker = VmTracker(provider)
    try:
        await tracker.create(pool)
        (spec,) = clones.specs
        assert spec.location.diskMoveType == move
        assert spec.snapshot is None
    finally:
        await tracker.cleanup()


async def test_linked_clone_of_a_template_with_a_snapshot_gets_a_child_disk_on_it(
    make: Any, clones: CloneSpecs
) -> None:
    provider = make()
    template = await _new_template(provider, "with-snapshot", snapshot=True)
    pool = _pool("co-snapshot", template=template)
    tracker = VmTracker(provider)
    try:
        _, info = await tracker.create(pool)
        assert info.powered_on
        spec = clones.specs[-1]  # the first one made the template
        assert spec.location.diskMoveType == "createNewChildDiskBacking"
        current = await provider._call(
            lambda ops: ops.by_path("", "vm", template).snapshot.currentSnapshot._moId
        )
        assert spec.snapshot._moId == current
    finally:
        await tracker.cleanup()


async def test_template_delta_disks_are_added_once(make: Any) -> None:
    first = make(create_template_delta_disks=True)
    template = await _new_template(first, "delta", snapshot=False)
    pool = _pool("co-delta", template=template)

    def layers(ops: VmOps) -> list[int]:
        found = ops.by_path("", "vm", template)
        assert found.config.template  # still a template afterwards
        counts = []
        for disk in _disks(found):
            depth, backing = 0, disk.backing
            while backing.parent is not None:
                depth, backing = depth + 1, backing.parent
            counts.append(depth)
        return counts

    assert await first._call(layers) == [0]
    tracker = VmTracker(first)
    try:
        await tracker.create(pool)
        assert await first._call(layers) == [1]
        await tracker.create(pool)
        tracker.provider = make(create_template_delta_disks=True)  # another process: checks the template
        await tracker.create(pool)
        assert await first._call(layers) == [1]
        full = make(create_template_delta_disks=True, create_linked_clones=False)
        tracker.provider = full
        await tracker.create(
            msgspec.structs.replace(pool, template=await _new_template(full, "no-delta", snapshot=False))
        )
        assert full._cache.prepared == set()  # only linked clones need delta disks
    finally:
        await tracker.cleanup()


def _nic(vm: Any) -> Any:
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))


async def test_network_puts_the_nic_on_a_distributed_port_group(make: Any) -> None:
    provider = make()
    pool = _pool("co-dvpg", network="DC0_DVPG0")
    tracker = VmTracker(provider)
    try:
        vm, _ = await tracker.create(pool)
        backing = await _vm(provider, pool, vm, lambda found: _nic(found).backing)
        assert isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
        key = await provider._call(
            lambda ops: next(n.key for n in ops.datacenter("").network if n.name == "DC0_DVPG0")
        )
        assert backing.port.portgroupKey == key
    finally:
        await tracker.cleanup()


async def test_network_puts_the_nic_on_a_standard_port_group(make: Any) -> None:
    provider = make()
    pool = _pool("co-vmnet", network="VM Network")
    tracker = VmTracker(provider)
    try:
        vm, _ = await tracker.create(pool)
        backing = await _vm(provider, pool, vm, lambda found: _nic(found).backing)
        assert isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo)
        assert backing.deviceName == "VM Network"
    finally:
        await tracker.cleanup()


async def test_unknown_network_is_permanent(make: Any) -> None:
    provider = make()
    pool = _pool("co-nonet", network="No Such Net")
    with pytest.raises(ProviderError, match="No Such Net") as caught:
        await provider.create_vm(pool, "conetwork")
    assert caught.value.permanent
    assert await provider.get_vm(pool, "conetwork") is None


async def test_missing_folder_is_permanent_unless_create_folders(make: Any) -> None:
    strict = make(create_folders=False)
    pool = PoolTarget(name="co-nofolder", template=TEMPLATE, options={"folder": "vmpooler-co-new/deep/pool"})
    with pytest.raises(ProviderError, match="create_folders") as caught:
        await strict.create_vm(pool, "conofolder")
    assert caught.value.permanent

    tracker = VmTracker(make(global_options={"create_folders": True}, create_folders=None))
    try:
        await tracker.create(pool)  # creates every missing level
        tracker.provider = strict
        await tracker.create(pool)  # the folder exists now: no need to create it
    finally:
        await tracker.cleanup()
