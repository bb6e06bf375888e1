"""Pool status: VM counts per state, effective settings and last boot time of each pool."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

import events as ev
from events import Keys, Recorded
from events.lifecycle import SAME, TERMINAL, TRANSITIONS

from ._tx import Tx
from .views import PoolStatusView

__all__ = ["PoolStatus"]


class PoolStatus:
    """Keeps ``<rm:status>`` (the view) and ``<rm:status>:of`` (VM → state, to move counts)."""

    name = "status"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        key = keys.read_model(pool, self.name)
        states_key = f"{key}:of"
        view = await tx.get_json(key, PoolStatusView) or PoolStatusView(pool=pool)
        view = msgspec.structs.replace(view, counts=dict(view.counts))
        of = await tx.get_json(states_key, dict[str, str]) or {}
        of = dict(of)
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
            old = of.pop(r.vm, "")
            if old:
                view.counts[old] = view.counts.get(old, 0) - 1
                if view.counts[old] == 0:
                    del view.counts[old]
            if rule.target not in TERMINAL:
                of[r.vm] = rule.target
                view.counts[rule.target] = view.counts.get(rule.target, 0) + 1
        tx.put_json(key, view)
        tx.put_json(states_key, dict(sorted(of.items())))
