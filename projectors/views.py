"""Read-model records as the projectors store them and the API reads them (msgspec JSON)."""

from __future__ import annotations

import msgspec

__all__ = ["PoolStatusView", "VmView"]


class VmView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Everything the API shows about one VM, folded from its events.

    Times are milliseconds since the epoch (0 = never). ``state`` is the precise lifecycle state:
    cloning, booting, ready, running, completed, destroying, discovered, destroyed or vanished.
    ``lifetime`` is the lease in hours set at checkout (0 = never expires).
    """

    name: str
    pool: str
    state: str
    template: str = ""
    requested_at: int = 0
    request_id: str = ""
    pool_alias: str = ""
    cloned_at: int = 0
    clone_seconds: float = 0.0
    ip: str = ""
    host: str = ""
    ready_at: int = 0
    boot_seconds: float = 0.0
    checkout_at: int = 0
    lifetime: int = 0
    requested_as: str = ""
    token_user: str = ""
    token_hash: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    disks: list[int] = msgspec.field(default_factory=list)
    snapshots: dict[str, int] = msgspec.field(default_factory=dict)
    completed_at: int = 0
    completed_reason: str = ""
    destroy_at: int = 0
    destroyed_at: int = 0
    last_error: str = ""


class PoolStatusView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Counts and settings of one pool, folded from its log.

    Attributes:
        counts: live state → number of VMs in it (cloning, booting, ready, running, completed, ...).
        size, template, clone_target, clone_limit, ready_ttl, timeout: effective settings.
        last_boot: ms time a VM last became ready (0 = never).
        ondemand_owed: open on-demand request → VMs of this pool it still waits for.
        ondemand_pending: open on-demand request → its VMs of this pool now cloning or booting.
    """

    pool: str
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    size: int = 0
    template: str = ""
    clone_target: str = ""
    clone_limit: int = 0
    ready_ttl: int = 0
    timeout: int = 0
    last_boot: int = 0
    ondemand_owed: dict[str, int] = msgspec.field(default_factory=dict)
    ondemand_pending: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def requested(self) -> int:
        """On-demand VMs asked of this pool whose clone is not requested yet (vmpooler's
        ``requested``: on-demand work not yet pending)."""
        return sum(
            max(0, owed - self.ondemand_pending.get(request, 0))
            for request, owed in self.ondemand_owed.items()
        )
