"""Pool status: VM counts per state, effective settings and last boot time of each pool."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

import events as ev
from events import Keys, Recorded
from events.lifecycle import SAME, TERMINAL, TRANSITIONS
from events.streams import text

from ._tx import Tx
from .views import PoolStatusView

__all__ = ["PoolStatus"]


class PoolStatus:
    """Keeps ``<rm:status>`` (the view) and ``<rm:status>:of`` (hash VM → state, to move counts).

    The per-VM states are a hash, not part of the view, so a batch costs O(VMs in the batch), not
    O(VMs in the pool).
    """

    name = "status"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        key = keys.read_model(pool, self.name)
        of_key = f"{key}:of"
        view = await tx.get_json(key, PoolStatusView) or PoolStatusView(pool=pool)
        view = msgspec.structs.replace(view, counts=dict(view.counts))
        vms = sorted({r.vm for r in batch if r.vm})
        known: dict[str, str] = {}
        if vms:
            states = await tx.redis.hmget(of_key, vms)
            known = {vm: text(s) for vm, s in zip(vms, states, strict=True)}
        for r in batch:
            e = r.event
            if isinstance(e, ev.PoolConfigured):
                view.size, view.template, view.clone_target = e.size, e.template, e.clone_target
                view.clone_limit, view.ready_ttl, view.timeout = e.clone_limit, e.ready_ttl, e.timeout
                continue
            if isinstance(e, ev.VmReady):
                view.last_boot = r.at
            rule = TRANSITIONS.get(r.type)
            if rule is None or rule.target == SAME or not r.vm:
                continue
            old = known.get(r.vm, "")
            if old:
                view.counts[old] = view.counts.get(old, 0) - 1
                if view.counts[old] == 0:
                    del view.counts[old]
            if rule.target in TERMINAL:
                known[r.vm] = ""
                tx.op("HDEL", of_key, r.vm)
            else:
                known[r.vm] = rule.target
                view.counts[rule.target] = view.counts.get(rule.target, 0) + 1
                tx.op("HSET", of_key, r.vm, rule.target)
        tx.put_json(key, view)
