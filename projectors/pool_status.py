"""Pool status: VM counts per state, effective settings and last boot time of each pool."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

import events as ev
from events import Keys, Recorded
from events.lifecycle import PENDING, SAME, TERMINAL, TRANSITIONS
from events.streams import text

from ._tx import Tx
from .views import PoolStatusView

__all__ = ["PoolStatus"]


class PoolStatus:
    """Keeps ``<rm:status>`` (the view), ``<rm:status>:of`` (hash VM → state, to move counts) and
    ``<rm:status>:od`` (hash VM → on-demand request, while the VM clones or boots for one).

    The per-VM hashes are not part of the view, so a batch costs O(VMs in the batch), not O(VMs in
    the pool).
    """

    name = "status"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        key = keys.read_model(pool, self.name)
        of_key, od_key = f"{key}:of", f"{key}:od"
        view = await tx.get_json(key, PoolStatusView) or PoolStatusView(pool=pool)
        view = msgspec.structs.replace(
            view,
            counts=dict(view.counts),
            ondemand_owed=dict(view.ondemand_owed),
            ondemand_pending=dict(view.ondemand_pending),
        )
        vms = sorted({r.vm for r in batch if r.vm})
        known: dict[str, str] = {}
        requests: dict[str, str] = {}
        if vms:
            async with tx.redis.pipeline(transaction=False) as pipe:  # one round trip per batch
                pipe.hmget(of_key, vms)
                pipe.hmget(od_key, vms)
                states, owners = await pipe.execute()
            known = {vm: text(s) for vm, s in zip(vms, states, strict=True)}
            requests = {vm: text(o) for vm, o in zip(vms, owners, strict=True) if o is not None}
        for r in batch:
            e = r.event
            if isinstance(e, ev.PoolConfigured):
                view.size, view.template, view.clone_target = e.size, e.template, e.clone_target
                view.clone_limit, view.ready_ttl, view.timeout = e.clone_limit, e.ready_ttl, e.timeout
                continue
            if isinstance(e, ev.PoolOndemandRequested):
                view.ondemand_owed[e.request_id] = e.count
                continue
            if isinstance(e, ev.PoolOndemandClosed):
                view.ondemand_owed.pop(e.request_id, None)
                view.ondemand_pending.pop(e.request_id, None)
                continue
            if isinstance(e, ev.VmReady):
                view.last_boot = r.at
            if isinstance(e, ev.VmCheckedOut) and e.request_id in view.ondemand_owed:
                _add(view.ondemand_owed, e.request_id, -1)
            rule = TRANSITIONS.get(r.type)
            if rule is None or rule.target == SAME or not r.vm:
                continue
            if isinstance(e, ev.VmCloneRequested) and e.request_id in view.ondemand_owed:
                requests[r.vm] = e.request_id
                _add(view.ondemand_pending, e.request_id, 1)
                tx.op("HSET", od_key, r.vm, e.request_id)
            elif rule.target not in PENDING and r.vm in requests:
                request = requests.pop(r.vm)
                if request in view.ondemand_pending:
                    _add(view.ondemand_pending, request, -1)
                tx.op("HDEL", od_key, r.vm)
            old = known.get(r.vm, "")
            if old:
                _add(view.counts, old, -1)
            if rule.target in TERMINAL:
                known[r.vm] = ""
                tx.op("HDEL", of_key, r.vm)
            else:
                known[r.vm] = rule.target
                _add(view.counts, rule.target, 1)
                tx.op("HSET", of_key, r.vm, rule.target)
        tx.put_json(key, view)


def _add(counts: dict[str, int], key: str, n: int) -> None:
    """Add ``n`` to ``counts[key]``, dropping the key at 0."""
    value = counts.get(key, 0) + n
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)
