"""Who holds which running VMs: the fold the token index and the per-user usage share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import events as ev
from events import Recorded
from events.lifecycle import SAME, TRANSITIONS
from events.streams import text

from ._tx import Tx

__all__ = ["release", "track_running"]


async def track_running(
    tx: Tx, root: str, batch: Sequence[Recorded], holder: Callable[[ev.VmCheckedOut], str], sets: str
) -> None:
    """Keep ``<root>:<sets>:<holder>`` (the holder's running VMs) and ``<root>:of`` (VM -> holder):
    a checkout with a holder adds the VM, any transition out of ``running`` takes it away."""
    held: dict[str, str | None] = {}  # this batch's view of VM -> holder
    for r in batch:
        if isinstance(r.event, ev.VmCheckedOut) and holder(r.event):
            tx.op("SADD", f"{root}:{sets}:{holder(r.event)}", r.vm)
            tx.op("HSET", f"{root}:of", r.vm, holder(r.event))
            held[r.vm] = holder(r.event)
            continue
        rule = TRANSITIONS.get(r.type)
        if rule is None or rule.target == SAME or "running" not in rule.sources or not r.vm:
            continue
        await release(tx, root, sets, "of", r.vm, held)


async def release(tx: Tx, root: str, sets: str, index: str, member: str, held: dict[str, str | None]) -> None:
    """``member`` leaves its holder's set ``<root>:<sets>:<holder>`` (if ``<root>:<index>`` names
    one); ``held`` is the batch's view of the index, read through and kept up to date."""
    if member not in held:
        held[member] = text(await tx.redis.hget(f"{root}:{index}", member)) or None
    owner = held[member]
    if owner is not None:
        tx.op("SREM", f"{root}:{sets}:{owner}", member)
        tx.op("HDEL", f"{root}:{index}", member)
        held[member] = None
