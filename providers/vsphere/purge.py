"""Purging vSphere resources that belong to no configured pool (vmpooler's ``purge_unconfigured_resources``)."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from providers.vsphere.connection import wait_task
from providers.vsphere.ops import Placement, VmOps, clean_path

__all__ = ["purge"]


def purge(ops: VmOps, placements: list[Placement], allowlist: list[str]) -> list[str]:
    """Delete what sits beside configured pool folders but belongs to no pool; return the deleted paths.

    Only the parent folders of configured pool folders are scanned (a pool folder at the top level has no
    parent to scan, so the datacenter's VM folder is never swept). Spared: configured pool folders and
    their ancestors, folders holding a configured template, templates, and allowlisted names or paths.
    """
    keep: dict[str, set[str]] = {}
    bases: dict[str, set[str]] = {}
    for p in placements:
        kept = keep.setdefault(p.datacenter, set())
        for path in (clean_path(p.folder), clean_path(p.template).rpartition("/")[0]):
            parts = path.split("/") if path else []
            kept.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        base = clean_path(p.folder).rpartition("/")[0]
        if base:
            bases.setdefault(p.datacenter, set()).add(base)
    allowed = {clean_path(a) for a in allowlist}
    deleted: list[str] = []
    for dc_name, dc_bases in bases.items():
        for base in sorted(dc_bases):
            folder = ops.by_path(dc_name, "vm", base)
            if not isinstance(folder, vim.Folder):
                continue
            for child in list(folder.childEntity):
                path = f"{base}/{child.name}"
                if path in keep[dc_name] or child.name in allowed or path in allowed:
                    continue
                deleted.extend(_purge_entity(child, path))
    return deleted


def _purge_entity(entity: Any, path: str) -> list[str]:
    if isinstance(entity, vim.VirtualMachine):
        if entity.config is not None and entity.config.template:
            return []
        try:
            if entity.runtime.powerState != vim.VirtualMachine.PowerState.poweredOff:
                wait_task(entity.PowerOffVM_Task())
            wait_task(entity.Destroy_Task())
        except (vim.fault.InvalidPowerState, vmodl.fault.ManagedObjectNotFound):
            pass
        return [path]
    if not isinstance(entity, vim.Folder):
        return []
    deleted: list[str] = []
    for child in list(entity.childEntity):
        deleted.extend(_purge_entity(child, f"{path}/{child.name}"))
    if not list(entity.childEntity):
        wait_task(entity.Destroy_Task())
        deleted.append(path)
    return deleted
