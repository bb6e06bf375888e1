"""Host utilisation, least-used selection and the migration limiter of the vSphere provider (no vCenter)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")

from providers.vsphere.hosts import HostLoad, host_load, least_used
from providers.vsphere.options import VsphereOptions, merge_options
from providers.vsphere.slots import LocalSlots

MB = 1024 * 1024


def _summary(cpu_mhz_used: int = 1000, mem_mb_used: int = 1024, **runtime: Any) -> Any:
    state = {"inMaintenanceMode": False, "connectionState": "connected", "powerState": "poweredOn", **runtime}
    return SimpleNamespace(
        runtime=SimpleNamespace(**state),
        hardware=SimpleNamespace(cpuMhz=2000, numCpuCores=4, memorySize=8192 * MB, cpuModel="Xeon"),
        quickStats=SimpleNamespace(overallCpuUsage=cpu_mhz_used, overallMemoryUsage=mem_mb_used),
        overallStatus=runtime.pop("status", "green"),
    )


def test_host_load_is_cpu_and_memory_percent() -> None:
    load = host_load("h", _summary(2000, 2048), 90)
    assert load == HostLoad(name="h", cpu=25.0, memory=25.0, model="Xeon")


def test_an_idle_host_qualifies() -> None:
    load = host_load("idle", _summary(0, 0), 90)
    assert load is not None
    assert load.cpu == 0


@pytest.mark.parametrize(
    "summary",
    [
        _summary(inMaintenanceMode=True),
        _summary(connectionState="disconnected"),
        _summary(powerState="standBy"),
        _summary(7300),  # 91 % CPU
        _summary(mem_mb_used=7500),  # 92 % memory
    ],
)
def test_hosts_that_cannot_take_vms_are_left_out(summary: Any) -> None:
    assert host_load("h", summary, 90) is None


def test_red_hosts_are_left_out() -> None:
    summary = _summary()
    summary.overallStatus = "red"
    assert host_load("h", summary, 90) is None


def test_least_used_keeps_hosts_at_or_below_average_least_used_first() -> None:
    loads = [HostLoad("a", 90, 10), HostLoad("b", 10, 50), HostLoad("c", 30, 10), HostLoad("d", 10, 20)]
    assert [h.name for h in least_used(loads)] == ["d", "b", "c"]  # average 35 %; ties: less memory first
    assert least_used([]) == []


async def test_local_slots_count_vms() -> None:
    slots = LocalSlots(2)
    assert await slots.acquire("a")
    assert await slots.acquire("b")
    assert await slots.acquire("a")  # a VM holding a slot keeps it
    assert not await slots.acquire("c")
    await slots.release("a")
    assert await slots.acquire("c")
    assert not await LocalSlots(0).acquire("a")


def test_provider_block_overrides_global_keys_and_other_global_keys_are_ignored() -> None:
    merged = merge_options(
        {"server": "vc", "create_folders": True, "migration_limit": None},
        {"create_folders": False, "migration_limit": 4, "task_limit": 10},
    )
    assert merged == {"server": "vc", "create_folders": True, "migration_limit": 4}
    parsed = VsphereOptions.parse(merged)
    assert parsed.create_folders
    assert parsed.migration_limit == 4
    assert parsed.create_linked_clones


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("utilization_limit", 101),
        ("migration_limit", -1),
        ("manage_host_selection", "yes"),
        ("create_linked_clones", 1),
    ],
)
def test_bad_option_values_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        VsphereOptions.parse({key: value})
