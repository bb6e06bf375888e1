"""Events of one VM's lifecycle (vmpooler transitions T1-T21). The VM name is in the envelope."""

from __future__ import annotations

from typing import Literal

import msgspec

from ._base import Event
from ._refused import Refusal

__all__ = [
    "VmCheckedOut",
    "VmCheckoutReverted",
    "VmCloneFailed",
    "VmCloneRequested",
    "VmCloneStarted",
    "VmCloned",
    "VmDestroyFailed",
    "VmDestroyRequested",
    "VmDestroyStarted",
    "VmDestroyed",
    "VmDiscarded",
    "VmDiscovered",
    "VmDiskAdded",
    "VmDiskRequested",
    "VmEvent",
    "VmExpired",
    "VmLifetimeChanged",
    "VmMigrated",
    "VmReady",
    "VmReturned",
    "VmRevertRequested",
    "VmReverted",
    "VmSnapshotRequested",
    "VmSnapshotTaken",
    "VmTagged",
    "VmTaskFailed",
    "VmVanished",
]


class VmCloneRequested(Event, frozen=True, tag="vm.clone-requested"):
    """A new VM was decided: its name is fixed before any provider call, so clones are idempotent."""

    template: str
    reason: Literal["refill", "ondemand"] = "refill"
    request_id: str = ""
    pool_alias: str = ""


class VmCloneStarted(Event, frozen=True, tag="vm.clone-started"):
    worker: str
    attempt: int = 1


class VmCloned(Event, frozen=True, tag="vm.cloned"):
    seconds: float
    ip: str = ""
    host: str = ""
    adopted: bool = False


class VmCloneFailed(Event, frozen=True, tag="vm.clone-failed"):
    error: str
    error_class: str = ""
    permanent: bool = False


class VmReady(Event, frozen=True, tag="vm.ready"):
    boot_seconds: float


class VmCheckedOut(Event, frozen=True, tag="vm.checked-out"):
    """Handed out to a client. ``lifetime`` is the effective lease in hours (0 = never expires).

    ``request_id`` is set when the VM was handed to an on-demand request as it became ready.
    """

    lifetime: int
    requested_as: str = ""
    token_user: str = ""
    token_hash: str = ""
    request_id: str = ""


class VmCheckoutReverted(Event, frozen=True, tag="vm.checkout-reverted"):
    """Compensation: a multi-VM request could not be served whole, so this claim went back to ready."""

    reason: str = "partial request"


class VmLifetimeChanged(Event, frozen=True, tag="vm.lifetime-changed"):
    hours: int


class VmTagged(Event, frozen=True, tag="vm.tagged"):
    tags: dict[str, str] = msgspec.field(default_factory=dict)


class VmReturned(Event, frozen=True, tag="vm.returned"):
    """The client gave the VM back (DELETE /vm/<hostname>)."""


class VmExpired(Event, frozen=True, tag="vm.expired"):
    reason: Literal["ready_ttl", "lifetime", "boot_timeout"]


class VmChangeRefused(Refusal, frozen=True, tag="vm.refused"):
    """A client's change of this VM was refused: "who tried to return VM X" has an answer."""


class VmDiscarded(Event, frozen=True, tag="vm.discarded"):
    """Retired by the manager: drained, shrunk, unreachable, hostname mismatch, or unknown to us."""

    reason: str


class VmDestroyRequested(Event, frozen=True, tag="vm.destroy-requested"):
    """A retry of a failed destroy became due."""

    attempt: int = 1


class VmDestroyStarted(Event, frozen=True, tag="vm.destroy-started"):
    worker: str = ""


class VmDestroyFailed(Event, frozen=True, tag="vm.destroy-failed"):
    """A destroy attempt failed; ``retry_in`` seconds later the retry deadline fires.

    ``attempt`` has no default on purpose: the decision scripts read it from the stored body,
    where a default would be omitted.
    """

    error: str
    attempt: int
    retry_in: float = 0.0


class VmDestroyed(Event, frozen=True, tag="vm.destroyed"):
    seconds: float = 0.0


class VmDiscovered(Event, frozen=True, tag="vm.discovered"):
    """The provider holds a VM in this pool that the log does not know."""


class VmVanished(Event, frozen=True, tag="vm.vanished"):
    """A VM we track is gone from the provider's inventory."""

    last_state: str = ""


class VmDiskRequested(Event, frozen=True, tag="vm.disk-requested"):
    size_gb: int


class VmDiskAdded(Event, frozen=True, tag="vm.disk-added"):
    size_gb: int


class VmSnapshotRequested(Event, frozen=True, tag="vm.snapshot-requested"):
    name: str


class VmSnapshotTaken(Event, frozen=True, tag="vm.snapshot-taken"):
    name: str


class VmRevertRequested(Event, frozen=True, tag="vm.revert-requested"):
    name: str


class VmReverted(Event, frozen=True, tag="vm.reverted"):
    name: str


class VmTaskFailed(Event, frozen=True, tag="vm.task-failed"):
    task: Literal["disk", "snapshot", "revert", "migrate"]
    error: str


class VmMigrated(Event, frozen=True, tag="vm.migrated"):
    host: str
    from_host: str = ""


VmEvent = (
    VmCloneRequested
    | VmCloneStarted
    | VmCloned
    | VmCloneFailed
    | VmReady
    | VmCheckedOut
    | VmCheckoutReverted
    | VmLifetimeChanged
    | VmTagged
    | VmReturned
    | VmExpired
    | VmDiscarded
    | VmDestroyRequested
    | VmDestroyStarted
    | VmDestroyFailed
    | VmDestroyed
    | VmDiscovered
    | VmVanished
    | VmDiskRequested
    | VmDiskAdded
    | VmSnapshotRequested
    | VmSnapshotTaken
    | VmRevertRequested
    | VmReverted
    | VmTaskFailed
    | VmMigrated
    | VmChangeRefused
)
