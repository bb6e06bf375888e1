"""Running VMs per token: which VMs a token checked out and still holds."""

from __future__ import annotations

from collections.abc import Sequence

import events as ev
from events import Keys, Recorded
from events.lifecycle import SAME, TRANSITIONS
from events.streams import text

from ._tx import Tx

__all__ = ["TokenIndex"]


class TokenIndex:
    """``<rm:token>:t:<token hash>`` is the set of running VMs; ``<rm:token>:of`` maps VM → token hash."""

    name = "token"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        root = keys.read_model(pool, self.name)
        held: dict[str, str | None] = {}  # this batch's view of VM -> token hash
        for r in batch:
            if isinstance(r.event, ev.VmCheckedOut) and r.event.token_hash:
                tx.op("SADD", f"{root}:t:{r.event.token_hash}", r.vm)
                tx.op("HSET", f"{root}:of", r.vm, r.event.token_hash)
                held[r.vm] = r.event.token_hash
                continue
            rule = TRANSITIONS.get(r.type)
            if rule is None or rule.target == SAME or "running" not in rule.sources or not r.vm:
                continue
            if r.vm not in held:
                raw = await tx.redis.hget(f"{root}:of", r.vm)
                held[r.vm] = text(raw) or None
            token = held[r.vm]
            if token is not None:
                tx.op("SREM", f"{root}:t:{token}", r.vm)
                tx.op("HDEL", f"{root}:of", r.vm)
                held[r.vm] = None
