"""Host selection for clones and migrations (vmpooler's ``manage_host_selection`` and ``migrate_vm``).

As vmpooler: a host can take VMs when it is not in maintenance mode and its CPU and memory utilisation are
at most ``utilization_limit`` percent; the "least used" hosts of a cluster are those at or below the
cluster's average CPU utilisation, least used first; clones go to them in turn (round robin, so a burst of
clones spreads instead of piling onto one host); the list is refreshed after ``host_selection_max_age``
seconds. A checked-out VM is migrated when its host is not among the least used, to the next of them with
the same CPU model (vMotion compatibility). vmpooler needs a ``green`` host with non-zero usage figures;
here the host must be connected, powered on and not ``red`` (an idle host is the best target, not a suspect).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from commands.provider import ProviderError

__all__ = ["HostLoad", "HostSelector", "host_load", "least_used"]

_vmodl: Any = vmodl


@dataclass(frozen=True)
class HostLoad:
    """One host's utilisation in percent (``cpu``, ``memory``), CPU ``model`` and managed object ``ref``."""

    name: str
    cpu: float
    memory: float
    model: str = ""
    ref: Any = field(default=None, compare=False, repr=False)


def host_load(name: str, summary: Any, limit: float, ref: Any = None) -> HostLoad | None:
    """The utilisation of a host from its ``summary``, or ``None`` when it cannot take VMs."""
    runtime, hardware, stats = summary.runtime, summary.hardware, summary.quickStats
    if runtime is None or hardware is None or stats is None:
        return None
    if (
        runtime.inMaintenanceMode
        or runtime.connectionState != "connected"
        or runtime.powerState != "poweredOn"
    ):
        return None
    if (
        summary.overallStatus == "red"
        or not hardware.cpuMhz
        or not hardware.numCpuCores
        or not hardware.memorySize
    ):
        return None
    cpu = (stats.overallCpuUsage or 0) * 100 / (hardware.cpuMhz * hardware.numCpuCores)
    memory = (stats.overallMemoryUsage or 0) * 100 / (hardware.memorySize / 1024 / 1024)
    if cpu > limit or memory > limit:
        return None
    return HostLoad(name=name, cpu=cpu, memory=memory, model=hardware.cpuModel or "", ref=ref)


def least_used(loads: list[HostLoad]) -> list[HostLoad]:
    """Hosts at or below the average CPU utilisation, least used first (ties: less memory, then name)."""
    if not loads:
        return []
    average = sum(load.cpu for load in loads) / len(loads)
    return sorted((load for load in loads if load.cpu <= average), key=lambda h: (h.cpu, h.memory, h.name))


def _cluster_hosts(content: Any, cluster: Any) -> list[tuple[str, Any, Any]]:
    """``(name, summary, host)`` of every host of a compute resource, read in one PropertyCollector call."""
    spec = _vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[
            _vmodl.query.PropertyCollector.ObjectSpec(
                obj=cluster,
                skip=True,
                selectSet=[
                    _vmodl.query.PropertyCollector.TraversalSpec(
                        type=vim.ComputeResource, path="host", skip=False
                    )
                ],
            )
        ],
        propSet=[
            _vmodl.query.PropertyCollector.PropertySpec(type=vim.HostSystem, pathSet=["name", "summary"])
        ],
    )
    found = []
    for obj in content.propertyCollector.RetrieveContents([spec]):
        props = {prop.name: prop.val for prop in obj.propSet}
        found.append((str(props.get("name", "")), props.get("summary"), obj.obj))
    return found


class HostSelector:
    """Per-cluster lists of least-used hosts, refreshed after ``max_age`` seconds, handed out in turn.

    Thread-safe; a refresh (one vCenter call) happens under the lock, so concurrent clones of a cluster
    wait for it rather than all refreshing.
    """

    def __init__(self, *, max_age: float, limit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._lists: dict[str, tuple[float, list[HostLoad]]] = {}
        self.refreshes = 0

    def _hosts(self, content: Any, cluster: Any) -> list[HostLoad]:
        key = str(cluster._moId)
        now = self._clock()
        cached = self._lists.get(key)
        if cached is not None and now - cached[0] <= self.max_age:
            return cached[1]
        loads = [
            load
            for name, summary, ref in _cluster_hosts(content, cluster)
            if summary is not None and (load := host_load(name, summary, self.limit, ref)) is not None
        ]
        hosts = least_used(loads)
        self._lists[key] = (now, hosts)
        self.refreshes += 1
        return hosts

    def candidates(self, content: Any, cluster: Any) -> list[HostLoad]:
        """The cluster's least-used hosts, in the order they will be handed out."""
        with self._lock:
            return list(self._hosts(content, cluster))

    def next_host(self, content: Any, cluster: Any, model: str | None = None) -> HostLoad:
        """The next least-used host of ``cluster`` (with CPU ``model`` if given); it moves to the back.

        Raises:
            ProviderError: (retryable) when no host qualifies.
        """
        with self._lock:
            hosts = self._hosts(content, cluster)
            for i, host in enumerate(hosts):
                if model is None or host.model == model:
                    hosts.append(hosts.pop(i))
                    return host
        raise ProviderError(
            f"no host in {cluster.name} can take VMs: every host is in maintenance mode, "
            f"disconnected, powered off, red or above {self.limit:g}% CPU or memory"
        )
