"""The vSphere provider's options: its ``:providers:`` block over vmpooler's global ``:config:`` keys.

vmpooler reads the circuit-breaker, adaptive-timeout, host-selection, migration, folder and linked-clone
keys from ``:config:``, and lets a provider block override the breaker and timeout ones. Here every key in
:data:`GLOBAL_KEYS` may be given in either place; the provider block wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.guard import RESILIENCE_KEYS
from providers.guard import merge_options as merge

__all__ = ["GLOBAL_KEYS", "POOL_KEYS", "PROVIDER_KEYS", "VsphereOptions", "merge_options", "snapshot_tuning"]

GLOBAL_KEYS = (
    *RESILIENCE_KEYS,
    "migration_limit",
    "manage_host_selection",
    "host_selection_max_age",
    "utilization_limit",
    "create_folders",
    "create_linked_clones",
    "create_template_delta_disks",
    "max_tries",
    "retry_factor",
)
"""``:config:`` keys the provider reads when its own block does not set them."""
PROVIDER_KEYS = (
    "server",
    "username",
    "password",
    "insecure",
    "datacenter",
    "port",
    "connection_pool_size",
    "connection_pool_timeout",
    "vsphere_timeout",
    "task_timeout",
    "ready_check_port",
    "ready_check_timeout",
    "clone_extra_config",
    *GLOBAL_KEYS,
)
"""Every key of its ``:providers:`` block the provider reads."""
POOL_KEYS = (
    "folder",
    "datastore",
    "datacenter",
    "pool",
    "network",
    "create_linked_clone",
    "snapshot_mainMem_ioBlockPages",
    "snapshot_mainMem_iowait",
)
"""Every pool key the provider reads from ``PoolTarget.options``."""


def merge_options(options: Mapping[str, Any], global_options: object = None) -> dict[str, Any]:
    """The provider block over the :data:`GLOBAL_KEYS` of ``:config:`` (see :func:`providers.guard.merge_options`)."""
    return merge(options, global_options, GLOBAL_KEYS)


def _int(options: Mapping[str, Any], key: str, default: int, *, minimum: int = 0) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"vsphere provider option {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"vsphere provider option {key!r} must be a non-negative number, got {value!r}")
    return float(value)


def _bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"vsphere provider option {key!r} must be true or false, got {value!r}")
    return value


def snapshot_tuning(pool_options: Mapping[str, Any]) -> dict[str, str]:
    """vmpooler's ``snapshot_mainMem_ioBlockPages`` / ``snapshot_mainMem_iowait`` pool keys as extraConfig."""
    keys = {
        "snapshot_mainMem_ioBlockPages": "mainMem.ioBlockPages",
        "snapshot_mainMem_iowait": "mainMem.iowait",
    }
    return {vmx: str(pool_options[key]) for key, vmx in keys.items() if pool_options.get(key) is not None}


@dataclass(frozen=True)
class VsphereOptions:
    """Typed provider options (see :class:`providers.vsphere.VsphereProvider` for their meaning)."""

    datacenter: str
    port: int
    connection_pool_size: int
    connection_pool_timeout: float
    ready_check_port: int
    ready_check_timeout: float
    task_timeout: float
    extra_config: dict[str, str]
    migration_limit: int
    manage_host_selection: bool
    host_selection_max_age: float
    utilization_limit: float
    create_folders: bool
    create_linked_clones: bool
    create_template_delta_disks: bool
    max_tries: int
    retry_factor: float
    vsphere_timeout: float

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> VsphereOptions:
        """Validate merged options (see :func:`merge_options`).

        Raises:
            ValueError: naming the first option with a wrong type or value.
        """
        extra = options.get("clone_extra_config") or {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"vsphere provider option 'clone_extra_config' must be a mapping, got {extra!r}")
        limit = _float(options, "utilization_limit", 90)
        if limit > 100:
            raise ValueError(
                f"vsphere provider option 'utilization_limit' must be at most 100, got {limit:g}"
            )
        return cls(
            datacenter=str(options.get("datacenter") or ""),
            port=_int(options, "port", 443),
            connection_pool_size=_int(options, "connection_pool_size", 10, minimum=1),
            connection_pool_timeout=_float(options, "connection_pool_timeout", 60.0),
            ready_check_port=_int(options, "ready_check_port", 22),
            ready_check_timeout=_float(options, "ready_check_timeout", 1.0),
            # a clone can take minutes; the adaptive timeout (at most 60 s) is for vCenter's answers
            task_timeout=_float(options, "task_timeout", 900.0),
            extra_config={str(k): str(v) for k, v in extra.items()},
            migration_limit=_int(options, "migration_limit", 0),
            manage_host_selection=_bool(options, "manage_host_selection", False),
            host_selection_max_age=_float(options, "host_selection_max_age", 60.0),
            utilization_limit=limit,
            create_folders=_bool(options, "create_folders", False),
            create_linked_clones=_bool(options, "create_linked_clones", True),
            create_template_delta_disks=_bool(options, "create_template_delta_disks", False),
            max_tries=_int(options, "max_tries", 3, minimum=1),
            retry_factor=_float(options, "retry_factor", 10.0),
            vsphere_timeout=_float(options, "vsphere_timeout", 0.0),
        )
