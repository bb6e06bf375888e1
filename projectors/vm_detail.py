"""VM detail: one record per VM (what GET /vm/<hostname> shows) plus its event positions."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

import events as ev
from events import Keys, Recorded
from events.lifecycle import SAME, TRANSITIONS

from ._tx import Tx
from .views import VmView

__all__ = ["VmDetail"]


def evolve(view: VmView, r: Recorded) -> VmView:
    """Fold one event into a VM's view (pure)."""
    rule = TRANSITIONS.get(r.type)
    if rule is not None and rule.target != SAME:
        view.state = rule.target
    e = r.event
    match e:
        case ev.VmCloneRequested():
            view.template, view.requested_at = e.template, r.at
            view.request_id, view.pool_alias = e.request_id, e.pool_alias
        case ev.VmCloned():
            view.cloned_at, view.clone_seconds, view.ip, view.host = r.at, e.seconds, e.ip, e.host
        case ev.VmCloneFailed():
            view.last_error = e.error
        case ev.VmReady():
            view.ready_at, view.boot_seconds = r.at, e.boot_seconds
        case ev.VmCheckedOut():
            view.checkout_at, view.lifetime, view.requested_as = r.at, e.lifetime, e.requested_as
            view.token_user, view.token_hash = e.token_user, e.token_hash
        case ev.VmCheckoutReverted():
            view.checkout_at, view.lifetime, view.token_user, view.token_hash = 0, 0, "", ""
        case ev.VmLifetimeChanged():
            view.lifetime = e.hours
        case ev.VmTagged():
            view.tags = {**view.tags, **e.tags}
        case ev.VmReturned() | ev.VmExpired() | ev.VmDiscarded():
            view.completed_at = r.at
            view.completed_reason = getattr(e, "reason", "returned")
        case ev.VmDestroyStarted():
            view.destroy_at = r.at
        case ev.VmDestroyFailed():
            view.last_error = e.error
        case ev.VmDestroyed() | ev.VmVanished():
            view.destroyed_at = r.at
        case ev.VmDiskAdded():
            view.disks = [*view.disks, e.size_gb]
        case ev.VmSnapshotTaken():
            view.snapshots = {**view.snapshots, e.name: r.at}
        case ev.VmMigrated():
            view.host = e.host
        case ev.VmTaskFailed():
            view.last_error = f"{e.task}: {e.error}"
        case _:
            pass
    return view


class VmDetail:
    name = "vm"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        root = keys.read_model(pool, self.name)
        for r in batch:
            if not r.vm:
                continue
            key = f"{root}:v:{r.vm}"
            view = await tx.get_json(key, VmView)
            view = VmView(name=r.vm, pool=pool, state="") if view is None else msgspec.structs.replace(view)
            tx.put_json(key, evolve(view, r))
            tx.op("RPUSH", f"{root}:h:{r.vm}", r.position)
