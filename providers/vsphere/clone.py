"""Pieces of a clone and of a migration: disk backing (linked clones), template delta disks, the NIC's
network, and moving a checked-out VM to a less used host. Blocking pyvmomi code, run on worker threads.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from commands.provider import ProviderError
from providers.vsphere.connection import wait_task
from providers.vsphere.hosts import HostSelector
from providers.vsphere.ops import Target, VmOps

_vim: Any = vim  # data-object constructors are untyped in the pyvmomi stubs

__all__ = [
    "Migration",
    "add_delta_disks",
    "create",
    "current_host",
    "disk_placement",
    "migrate",
    "nic_change",
]


def disk_placement(template: Any, linked: bool) -> tuple[str, Any]:
    """``(diskMoveType, snapshot)`` for a clone of ``template``.

    A full clone consolidates every disk (vmpooler's ``moveAllDiskBackingsAndConsolidate``). A linked clone
    from a template with a snapshot gets a new child disk on the template's current snapshot
    (``createNewChildDiskBacking``); without a snapshot it shares all but the child-most disk layer
    (vmpooler's ``moveChildMostDiskBacking``, cheap once the template has a delta layer, see
    :func:`add_delta_disks`).
    """
    if not linked:
        return "moveAllDiskBackingsAndConsolidate", None
    snapshot = template.snapshot
    if snapshot is not None and snapshot.currentSnapshot is not None:
        return "createNewChildDiskBacking", snapshot.currentSnapshot
    return "moveChildMostDiskBacking", None


def _disks(vm: Any) -> list[Any]:
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def add_delta_disks(template: Any) -> bool:
    """Put a delta layer on every disk of ``template`` so linked clones share its base disks (vmpooler's
    ``create_template_delta_disks``); return whether it did. A template whose disks all have a parent layer
    already is left alone, so this runs once per template whoever calls it. A template (which vSphere will
    not reconfigure) is turned into a VM for the change and back into a template."""
    disks = _disks(template)
    if not disks or all(getattr(d.backing, "parent", None) is not None for d in disks):
        return False
    changes = []
    for disk in disks:
        old = disk.backing
        backing = _vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"[{old.datastore.name}]" if old.datastore is not None else "",
            datastore=old.datastore,
            diskMode=old.diskMode,
            thinProvisioned=old.thinProvisioned,
            parent=old,
        )
        layered = _vim.vm.device.VirtualDisk(
            key=disk.key,
            controllerKey=disk.controllerKey,
            unitNumber=disk.unitNumber,
            capacityInKB=disk.capacityInKB,
            backing=backing,
        )
        changes.append(_vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk))
        changes.append(
            _vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=layered)
        )
    is_template = bool(template.config.template)
    if is_template:
        host = template.runtime.host
        template.MarkAsVirtualMachine(pool=host.parent.resourcePool, host=host)
    try:
        wait_task(template.ReconfigVM_Task(spec=_vim.vm.ConfigSpec(deviceChange=changes)))
    finally:
        if is_template:
            template.MarkAsTemplate()
    return True


def nic_change(dc: Any, template: Any, network: str) -> Any:
    """A device change putting the template's first network adapter on ``network`` (a port group or
    distributed port group of the datacenter), connected at power on.

    Raises:
        ProviderError: (permanent) when the network or the template's network adapter does not exist.
    """
    found: Any = next((n for n in dc.network if n.name == network), None)
    if found is None:
        raise ProviderError(f"network {network!r} not found in datacenter {dc.name}", permanent=True)
    nic = next(
        (d for d in template.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)), None
    )
    if nic is None:
        raise ProviderError(
            f"template {template.name} has no network adapter to put on {network!r}", permanent=True
        )
    if isinstance(found, vim.dvs.DistributedVirtualPortgroup):
        switch: Any = found.config.distributedVirtualSwitch
        port = _vim.dvs.PortConnection(switchUuid=switch.uuid, portgroupKey=found.key)
        nic.backing = _vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    else:
        nic.backing = _vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=network, network=found, useAutoDetect=False
        )
    nic.connectable = _vim.vm.device.VirtualDevice.ConnectInfo(
        allowGuestControl=True, startConnected=True, connected=True
    )
    return _vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)


@dataclass(frozen=True)
class Migration:
    """What :func:`migrate` did: the VM runs on ``host``; ``source`` is set when it was moved there."""

    host: str
    source: str = ""
    seconds: float = 0.0
    skipped: str = ""
    """Why it was not moved: ``disabled``, ``limit`` (too many migrations in flight), ``in_target`` (already
    on a least-used host) or ``no_host`` (no host of the same CPU model can take it)."""


def migrate(
    content: Any,
    vm: Any,
    selector: HostSelector,
    clock: Callable[[], float] = time.monotonic,
) -> Migration:
    """Move ``vm`` to the next least-used host of its cluster with the same CPU model, unless its host is
    among the least used (the caller holds a migration slot)."""
    source = vm.runtime.host
    if source is None:
        raise ProviderError(f"cannot tell which host VM {vm.name} runs on")
    name = str(source.name)
    cluster = source.parent
    if any(h.name == name for h in selector.candidates(content, cluster)):
        return Migration(host=name, skipped="in_target")
    model = source.summary.hardware.cpuModel or ""
    try:
        target = selector.next_host(content, cluster, model)
    except ProviderError:
        return Migration(host=name, skipped="no_host")
    started = clock()
    wait_task(vm.RelocateVM_Task(spec=_vim.vm.RelocateSpec(host=target.ref)))
    return Migration(host=target.name, source=name, seconds=clock() - started)


def current_host(vm: Any, why: str) -> Migration:
    """``vm`` stays where it is, for reason ``why`` (see :attr:`Migration.skipped`)."""
    host = vm.runtime.host
    return Migration(host=str(host.name) if host is not None else "", skipped=why)


def create(ops: VmOps, t: Target, selector: HostSelector | None = None) -> Any:
    """Clone the template into the pool folder (adopting an existing VM), then power it on; with
    ``placement.select_host``, onto the next least-used host of the resource pool's cluster."""
    p = t.placement
    existing = ops.find_vm(t)
    if existing is not None:
        return existing
    template = ops.by_path(p.datacenter, "vm", p.template) if p.template else None
    if not isinstance(template, vim.VirtualMachine):
        raise ProviderError(f"template {p.template!r} not found", permanent=True)
    if p.delta_disks and p.linked_clone and p.template not in ops.prepared:
        add_delta_disks(template)
        ops.prepared.add(p.template)
    pool = ops.resource_pool(p)
    move, snapshot = disk_placement(template, p.linked_clone)
    location = _vim.vm.RelocateSpec(pool=pool, diskMoveType=move)
    if p.select_host and selector is not None:
        location.host = selector.next_host(ops.content, pool.owner).ref
    datastore = ops.datastore(p.datacenter, p.datastore)
    if datastore is not None:
        location.datastore = datastore
    extra = {**p.extra_config, "guestinfo.hostname": t.vm}
    annotation = json.dumps(
        {
            "created_by": "vmpooler",
            "base_template": p.template,
            "creation_timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    config = _vim.vm.ConfigSpec(
        annotation=annotation,
        extraConfig=[_vim.option.OptionValue(key=key, value=value) for key, value in extra.items()],
    )
    if p.network:
        config.deviceChange = [nic_change(ops.datacenter(p.datacenter), template, p.network)]
    spec = _vim.vm.CloneSpec(
        location=location, config=config, powerOn=False, template=False, snapshot=snapshot
    )
    folder = ops.ensure_folder(p.datacenter, p.folder, create=p.create_folders)
    try:
        vm = wait_task(template.CloneVM_Task(folder=folder, name=t.vm, spec=spec))
    except vim.fault.DuplicateName:
        vm = ops.require_vm(t)
        ops.power_on(vm)
        return vm
    with contextlib.suppress(vim.fault.InvalidPowerState):  # a new clone is off: no need to ask
        wait_task(vm.PowerOnVM_Task())
    return vm
