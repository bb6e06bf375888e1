"""The VM state machine as data: the one definition of how an event changes a pool's state.

The live decision scripts (Lua, rendered from these tables) and the Python fold used for replay
and tests both interpret exactly these tables, so live state and replayed state cannot disagree
by construction; a property test checks the two interpreters against each other.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "DEADLINES",
    "GONE_KEPT_MS",
    "LIVE",
    "NONE",
    "PENDING",
    "SAME",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "Deadline",
    "Transition",
]

NONE = ""
"""The state of a VM the log has never mentioned (or that reached a terminal state)."""
SAME = "="
"""Transition target meaning "stay in the current state"."""

STATES = ("cloning", "booting", "ready", "running", "completed", "destroying", "discovered")
"""Live states, each kept as a sorted set of VM names scored by the time the VM entered it."""
TERMINAL = frozenset({"destroyed", "vanished"})
LIVE = frozenset(STATES)
GONE_KEPT_MS = 86_400_000
"""How long a terminal VM's name stays in the pool's ``gone`` set (so a late inventory listing does
not rediscover a VM that was just destroyed); trimmed by event time, so replay trims the same."""
PENDING = frozenset({"cloning", "booting"})
"""vmpooler's ``pending`` is our cloning + booting."""


class Transition(msgspec.Struct, frozen=True):
    sources: frozenset[str]
    target: str


def _t(sources: set[str] | frozenset[str], target: str) -> Transition:
    return Transition(frozenset(sources), target)


_ACTIVE = {"booting", "ready", "running"}

TRANSITIONS: dict[str, Transition] = {
    "vm.clone-requested": _t({NONE}, "cloning"),
    "vm.clone-started": _t({"cloning"}, SAME),
    "vm.cloned": _t({"cloning"}, "booting"),
    "vm.clone-failed": _t({"cloning"}, "completed"),
    "vm.ready": _t({"booting"}, "ready"),
    "vm.checked-out": _t({"ready"}, "running"),
    "vm.checkout-reverted": _t({"running"}, "ready"),
    "vm.lifetime-changed": _t({"running"}, SAME),
    "vm.tagged": _t(LIVE, SAME),
    "vm.returned": _t({"running"}, "completed"),
    "vm.expired": _t(PENDING | {"ready", "running"}, "completed"),
    "vm.discarded": _t(PENDING | {"ready", "running", "discovered"}, "completed"),
    "vm.destroy-requested": _t({"completed"}, SAME),
    "vm.destroy-started": _t({"completed"}, "destroying"),
    "vm.destroy-failed": _t({"destroying"}, "completed"),
    "vm.destroyed": _t({"destroying", "completed"}, "destroyed"),
    "vm.discovered": _t({NONE}, "discovered"),
    "vm.vanished": _t(LIVE, "vanished"),
    "vm.disk-requested": _t(_ACTIVE, SAME),
    "vm.disk-added": _t(LIVE, SAME),
    "vm.snapshot-requested": _t(_ACTIVE, SAME),
    "vm.snapshot-taken": _t(LIVE, SAME),
    "vm.revert-requested": _t(_ACTIVE, SAME),
    "vm.reverted": _t(LIVE, SAME),
    "vm.task-failed": _t(LIVE, SAME),
    "vm.migrated": _t(LIVE, SAME),
}
"""Event type → (states it may be appended in, state it leads to). Pool events are not listed."""


class Deadline(msgspec.Struct, frozen=True, kw_only=True):
    """A time-driven transition, armed while a VM is in ``states``.

    Attributes:
        kind: short name, part of the member of the pool's due set (``<kind>:<vm>``).
        states: the deadline is armed on entering this set of states and disarmed on leaving it.
        setting: pool setting (minutes) giving the duration when armed on entry, or ``None``.
        field: event body field giving the duration when armed on entry, or ``None``.
        unit_ms: milliseconds per unit of the setting or field.
        rearm: event type → body field whose value re-arms the deadline (0 disarms it).
        anchor: what a re-arm counts from: ``"entry"`` (when the VM entered its state) or ``"now"``.
        fires: the event body (JSON) appended when the deadline passes.
        carry: body field of the re-arming event whose value + 1 is added to the fired body under
            the same name (counts retries); ``None`` for none.
    """

    kind: str
    states: frozenset[str]
    setting: str | None = None
    field: str | None = None
    unit_ms: int
    rearm: dict[str, str] = msgspec.field(default_factory=dict)
    anchor: str = "entry"
    fires: bytes
    carry: str | None = None

    @property
    def fires_type(self) -> str:
        """The type of the event this deadline fires; appending one disarms the deadline."""
        return str(msgspec.json.decode(self.fires)["type"])


DEADLINES: tuple[Deadline, ...] = (
    Deadline(
        kind="boot",
        states=PENDING,
        setting="timeout",
        unit_ms=60_000,
        fires=b'{"type":"vm.expired","reason":"boot_timeout"}',
    ),
    Deadline(
        kind="ttl",
        states=frozenset({"ready"}),
        setting="ready_ttl",
        unit_ms=60_000,
        fires=b'{"type":"vm.expired","reason":"ready_ttl"}',
    ),
    Deadline(
        kind="life",
        states=frozenset({"running"}),
        field="lifetime",
        unit_ms=3_600_000,
        rearm={"vm.lifetime-changed": "hours"},
        fires=b'{"type":"vm.expired","reason":"lifetime"}',
    ),
    Deadline(
        kind="retry",
        states=frozenset({"completed"}),
        unit_ms=1000,
        rearm={"vm.destroy-failed": "retry_in"},
        anchor="now",
        carry="attempt",
        fires=b'{"type":"vm.destroy-requested"}',
    ),
)
