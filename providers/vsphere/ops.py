"""Blocking pyvmomi operations behind :class:`providers.vsphere.VsphereProvider` (run on worker threads).

Paths follow vmpooler: a pool's ``template`` and ``folder`` are inventory paths relative to the datacenter's
VM folder (``templates/debian-12``, ``vmpooler/debian-12``). VMs are found by inventory path, never through
a container view, so lookups cost one call and see only the pool's folder.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from commands.provider import ProviderError, VmInfo
from providers.vsphere.connection import wait_task

_vim: Any = vim  # data-object constructors are untyped in the pyvmomi stubs
_UNUSABLE_IP_PREFIXES = ("0.", "169.254.")  # unset or link-local: the guest has no real address yet

__all__ = ["OpsCache", "Placement", "Target", "VmOps", "clean_path"]

# ServiceContent per session (keyed by its SOAP stub, which its references are bound to): fetched once,
# not on every call
_contents: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Placement:
    """Where and how clones go: pool options ``datacenter``, ``folder``, ``datastore``, ``pool``,
    ``network``, ``create_linked_clone``, the clone target, and the provider's folder, host-selection and
    delta-disk switches."""

    datacenter: str
    folder: str
    template: str = ""
    datastore: str = ""
    resource_pool: str = ""
    clone_target: str = ""
    network: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)
    linked_clone: bool = False
    create_folders: bool = True
    select_host: bool = False
    delta_disks: bool = False


@dataclass(frozen=True)
class Target:
    """A VM in a pool folder."""

    placement: Placement
    vm: str


def clean_path(path: str) -> str:
    return "/".join(part for part in path.split("/") if part)


@dataclass
class OpsCache:
    """What one provider learns once and reuses across sessions: datacenter inventory paths (by configured
    name, ``""`` for the first datacenter) and the templates it gave delta disks (see ``add_delta_disks``)."""

    dc_paths: dict[str, str] = field(default_factory=dict)
    prepared: set[str] = field(default_factory=set)


class VmOps:
    """pyvmomi calls on one logged-in ``ServiceInstance``. Datacenters are named as configured (``""``: the
    first one) and resolved to inventory paths once per provider."""

    def __init__(self, si: vim.ServiceInstance, cache: OpsCache | None = None) -> None:
        self.si = si
        stub = si._stub
        content = _contents.get(stub)
        if content is None:
            content = _contents[stub] = si.RetrieveContent()
        self.content: Any = content
        self.cache = cache if cache is not None else OpsCache()
        self.prepared = self.cache.prepared

    # lookups ------------------------------------------------------------------------------------------------

    def datacenter(self, name: str) -> Any:
        if name:
            found = self.content.searchIndex.FindByInventoryPath(clean_path(name))
            if not isinstance(found, vim.Datacenter):
                raise ProviderError(f"datacenter {name!r} not found", permanent=True)
            return found
        for child in self.content.rootFolder.childEntity:
            if isinstance(child, vim.Datacenter):
                return child
        raise ProviderError("no datacenter in this vCenter", permanent=True)

    def _dc_path(self, dc: Any) -> str:
        parts = [dc.name]
        parent = dc.parent
        while parent is not None and parent != self.content.rootFolder:
            parts.insert(0, parent.name)
            parent = parent.parent
        return "/".join(parts)

    def dc_path(self, dc: str) -> str:
        """The inventory path of the datacenter configured as ``dc``."""
        path = self.cache.dc_paths.get(dc)
        if path is None:
            path = self.cache.dc_paths[dc] = self._dc_path(self.datacenter(dc))
        return path

    def by_path(self, dc: str, kind: str, path: str) -> Any:
        """The entity at ``path`` under datacenter ``dc``'s ``kind`` folder (``vm``, ``host``), or ``None``."""
        return self.content.searchIndex.FindByInventoryPath(f"{self.dc_path(dc)}/{kind}/{clean_path(path)}")

    def find_vm(self, t: Target) -> Any:
        found = self.by_path(t.placement.datacenter, "vm", f"{t.placement.folder}/{t.vm}")
        return found if isinstance(found, vim.VirtualMachine) else None

    def require_vm(self, t: Target) -> Any:
        vm = self.find_vm(t)
        if vm is None:
            raise ProviderError(f"VM {t.vm} not found in folder {t.placement.folder!r}")
        return vm

    def info(self, vm: Any, template: str) -> VmInfo:
        summary = vm.summary
        runtime = summary.runtime
        guest = summary.guest
        ip = (guest.ipAddress if guest else "") or ""
        return VmInfo(
            name=summary.config.name if summary.config is not None else vm.name,
            hostname=(guest.hostName if guest else "") or "",
            ip="" if ip.startswith(_UNUSABLE_IP_PREFIXES) else ip,
            host=runtime.host.name if runtime.host is not None else "",
            powered_on=runtime.powerState == vim.VirtualMachine.PowerState.poweredOn,
            template=template,
        )

    def list_vms(self, p: Placement) -> list[str]:
        folder = self.by_path(p.datacenter, "vm", p.folder)
        if not isinstance(folder, vim.Folder):
            return []
        return [child.name for child in folder.childEntity if isinstance(child, vim.VirtualMachine)]

    # create -------------------------------------------------------------------------------------------------

    def ensure_folder(self, dc: str, path: str, *, create: bool = True) -> Any:
        """The VM folder at ``path``, created part by part when ``create`` (vmpooler's ``create_folders``).

        Raises:
            ProviderError: (permanent) when it does not exist and ``create`` is false.
        """
        found = self.by_path(dc, "vm", path)
        if isinstance(found, vim.Folder):
            return found
        if not create:
            raise ProviderError(
                f"folder {clean_path(path)!r} not found (set create_folders to create it)", permanent=True
            )
        folder = self.datacenter(dc).vmFolder
        for part in clean_path(path).split("/"):
            child = next(
                (c for c in folder.childEntity if isinstance(c, vim.Folder) and c.name == part), None
            )
            if child is None:
                try:
                    child = folder.CreateFolder(part)
                except vim.fault.DuplicateName:  # another worker made it first
                    child = next(
                        c for c in folder.childEntity if isinstance(c, vim.Folder) and c.name == part
                    )
            folder = child
        return folder

    def resource_pool(self, p: Placement) -> Any:
        """The resource pool clones of ``p`` go to: its ``pool``, else its clone target cluster's root pool,
        else the first compute resource's."""
        dc = p.datacenter
        if p.resource_pool:
            found = self.by_path(dc, "host", p.resource_pool)
            if isinstance(found, vim.ResourcePool):
                return found
            if isinstance(found, vim.ComputeResource):
                return found.resourcePool
            raise ProviderError(f"resource pool {p.resource_pool!r} not found", permanent=True)
        if p.clone_target:
            found = self.by_path(dc, "host", p.clone_target)
            if not isinstance(found, vim.ComputeResource):
                raise ProviderError(f"clone target {p.clone_target!r} not found", permanent=True)
            return found.resourcePool
        for child in self.datacenter(dc).hostFolder.childEntity:
            if isinstance(child, vim.ComputeResource):
                return child.resourcePool
        raise ProviderError("no compute resource in the datacenter", permanent=True)

    def datastore(self, dc: str, name: str) -> Any:
        if not name:
            return None
        for ds in self.datacenter(dc).datastore:
            if ds.name == name:
                return ds
        raise ProviderError(f"datastore {name!r} not found", permanent=True)

    def power_on(self, vm: Any) -> None:
        if vm.runtime.powerState == vim.VirtualMachine.PowerState.poweredOn:
            return
        with contextlib.suppress(vim.fault.InvalidPowerState):
            wait_task(vm.PowerOnVM_Task())

    # other operations ---------------------------------------------------------------------------------------

    def destroy(self, t: Target) -> None:
        vm = self.find_vm(t)
        if vm is None:
            return
        try:
            if vm.runtime.powerState != vim.VirtualMachine.PowerState.poweredOff:
                with contextlib.suppress(vim.fault.InvalidPowerState):
                    wait_task(vm.PowerOffVM_Task())
            wait_task(vm.Destroy_Task())
        except vmodl.fault.ManagedObjectNotFound:  # deleted under us: the goal is reached
            return

    def ready_ip(self, t: Target) -> str | None:
        """The guest IP of a powered-on VM, or ``None`` while it is missing, off or has no IP yet."""
        vm = self.find_vm(t)
        if vm is None:
            return None
        summary = vm.summary  # one read: power state and guest IP (not the host, which info() needs)
        ip = (summary.guest.ipAddress if summary.guest else "") or ""
        if summary.runtime.powerState != vim.VirtualMachine.PowerState.poweredOn:
            return None
        return None if not ip or ip.startswith(_UNUSABLE_IP_PREFIXES) else ip

    def add_disk(self, t: Target, size_gb: int) -> None:
        if size_gb <= 0:
            raise ProviderError(f"disk size must be positive, got {size_gb} GB", permanent=True)
        vm = self.require_vm(t)
        devices = vm.config.hardware.device
        controller = next((d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)), None)
        if controller is None:
            raise ProviderError(f"VM {t.vm} has no SCSI controller", permanent=True)
        used = {d.unitNumber for d in devices if getattr(d, "controllerKey", None) == controller.key}
        used.add(7)  # the controller's own unit
        unit = next(u for u in range(16) if u not in used)
        disk = _vim.vm.device.VirtualDisk(
            key=-101,
            controllerKey=controller.key,
            unitNumber=unit,
            capacityInKB=size_gb * 1024 * 1024,
            backing=_vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=True, fileName=""
            ),
        )
        change = _vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            fileOperation=vim.vm.device.VirtualDeviceSpec.FileOperation.create,
            device=disk,
        )
        wait_task(vm.ReconfigVM_Task(spec=_vim.vm.ConfigSpec(deviceChange=[change])))

    def snapshot(self, t: Target, name: str) -> None:
        vm = self.require_vm(t)
        if vm.snapshot is not None and _find_snapshot(vm.snapshot.rootSnapshotList, name) is not None:
            raise ProviderError(f"snapshot {name!r} of VM {t.vm} already exists", permanent=True)
        memory = vm.runtime.powerState == vim.VirtualMachine.PowerState.poweredOn
        wait_task(vm.CreateSnapshot_Task(name=name, description="vmpooler", memory=memory, quiesce=False))

    def revert(self, t: Target, name: str) -> None:
        vm = self.require_vm(t)
        tree = vm.snapshot.rootSnapshotList if vm.snapshot is not None else []
        found = _find_snapshot(tree, name)
        if found is None:
            raise ProviderError(f"snapshot {name!r} of VM {t.vm} not found", permanent=True)
        wait_task(found.snapshot.RevertToSnapshot_Task())

    def host_of(self, t: Target) -> str:
        vm = self.require_vm(t)
        host = vm.runtime.host
        return str(host.name) if host is not None else ""


def _find_snapshot(tree: Any, name: str) -> Any:
    for node in tree or []:
        if node.name == name:
            return node
        found = _find_snapshot(node.childSnapshotList, name)
        if found is not None:
            return found
    return None
