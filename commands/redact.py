"""What of a configuration may be shown: an allow-list of keys known to be safe, applied recursively.

A deny-list (``password``, ``secret`` ...) misses every spelling nobody thought of (``pwd``,
``ssh_key``, ``access_key``, ``guestinfo.password`` under ``clone_extra_config``), so everything not
known to be harmless is withheld: ``GET /api/v3/config`` drops it, ``vmpooler config check`` may show
it masked (``mask="<redacted>"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SAFE_POOL_KEYS", "redact"]

SAFE_POOL_KEYS = frozenset(
    {
        # vmpooler's pool keys
        *("name", "alias", "template", "size", "provider", "timeout", "ready_ttl", "dns_plugin"),
        *("clone_target", "timeout_notification", "check_hostname_for_mismatch"),
        *("check_loop_delay_min", "check_loop_delay_max", "check_loop_delay_decay"),
        # vSphere placement and cloning
        *("folder", "datastore", "datacenter", "network", "host", "snapshot_mainmem_ioblockpages"),
        *("snapshot_mainmem_iowait", "create_linked_clone", "create_template_delta_disks"),
        # cloud placement (zone, image, machine shape)
        *("zone", "region", "project", "machine_type", "instance_type", "disk_type", "network_name"),
        *("subnetwork_name", "subnet_id", "image", "image_family", "volume_size", "volume_type"),
    }
)
"""Pool option names whose values are placement or shape, never credentials."""


def redact(value: Mapping[str, Any], allowed: frozenset[str], *, mask: str | None = None) -> dict[str, Any]:
    """``value`` with only the ``allowed`` keys, at every depth.

    A nested mapping is kept under an allowed key with its own keys redacted the same way; a list
    keeps its scalars and redacts its mappings. A key that is not allowed is dropped, or its value
    replaced by ``mask`` when one is given.
    """
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in allowed:
            out[key] = _redact_item(item, allowed, mask)
        elif mask is not None:
            out[key] = mask
    return out


def _redact_item(item: Any, allowed: frozenset[str], mask: str | None) -> Any:
    if isinstance(item, Mapping):
        return redact(item, allowed, mask=mask)
    if isinstance(item, list | tuple):
        return [_redact_item(i, allowed, mask) for i in item]
    return item
