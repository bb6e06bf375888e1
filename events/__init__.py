"""Events: the log's vocabulary, envelope, codec, key names and the VM state machine as data.

Imports nothing of ours; every other package builds on it.
"""

from __future__ import annotations

from ._base import Event
from .codec import SCHEMA_VERSION, AnyEvent, Recorded, decode_body, decode_entry, encode, register_upcaster
from .control import ControlEvent, TokenCreated, TokenRevoked
from .keys import CONTROL, Keys
from .pool import PoolConfigured, PoolEvent, PoolReset
from .vm import (
    VmCheckedOut,
    VmCheckoutReverted,
    VmCloned,
    VmCloneFailed,
    VmCloneRequested,
    VmCloneStarted,
    VmDestroyed,
    VmDestroyFailed,
    VmDestroyRequested,
    VmDestroyStarted,
    VmDiscarded,
    VmDiscovered,
    VmDiskAdded,
    VmDiskRequested,
    VmEvent,
    VmExpired,
    VmLifetimeChanged,
    VmMigrated,
    VmReady,
    VmReturned,
    VmReverted,
    VmRevertRequested,
    VmSnapshotRequested,
    VmSnapshotTaken,
    VmTagged,
    VmTaskFailed,
    VmVanished,
)

__all__ = [
    "CONTROL",
    "SCHEMA_VERSION",
    "AnyEvent",
    "ControlEvent",
    "Event",
    "Keys",
    "PoolConfigured",
    "PoolEvent",
    "PoolReset",
    "Recorded",
    "TokenCreated",
    "TokenRevoked",
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
    "decode_body",
    "decode_entry",
    "encode",
    "register_upcaster",
]
