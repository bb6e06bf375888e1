"""On-demand request status (what ``GET /ondemandvm/<id>`` shows), folded from the control
stream (the request) and the pool streams (the VMs handed to it).

Keys: ``<rm:ondemand of ctl>:r:<id>`` is the request's :class:`OndemandView`; in each pool,
``<rm:ondemand of pool>:d:<id>`` maps requested name -> the VMs delivered from that pool, in
delivery order. Run it over the pool streams and the control stream (``events.CONTROL``).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

import events as ev
from events import Keys, Recorded

from ._tx import Tx

__all__ = ["OndemandStatus", "OndemandView"]

_STATUS = {
    "ondemand.fulfilled": "ready",
    "ondemand.failed": "failed",
    "ondemand.cancelled": "deleted",
}
"""Request event -> vmpooler's status word (a pending request has none)."""


class OndemandView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One request as the API shows it.

    Attributes:
        request_id: the request's id.
        status: ``pending``, ``ready``, ``failed`` or ``deleted`` (vmpooler's words).
        requested: requested name -> pool -> VM count.
        reason: why it failed (``ttl``, ``Configuration error: ...``, ``Max retry attempts exceeded``).
        token_user, token_hash: the requester and its token's hash.
        accepted_at, settled_at: ms times.
    """

    request_id: str
    status: str
    requested: dict[str, dict[str, int]]
    reason: str = ""
    token_user: str = ""
    token_hash: str = ""
    accepted_at: int = 0
    settled_at: int = 0


class OndemandStatus:
    name = "ondemand"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        root = keys.read_model(pool, self.name)
        for r in batch:
            e = r.event
            if isinstance(e, ev.OndemandAccepted):
                view = OndemandView(
                    request_id=e.request_id,
                    status="pending",
                    requested=e.slices,
                    token_user=e.token_user,
                    token_hash=e.token_hash,
                    accepted_at=r.at,
                )
                tx.put_json(f"{root}:r:{e.request_id}", view)
            elif isinstance(e, ev.OndemandFulfilled | ev.OndemandFailed | ev.OndemandCancelled):
                key = f"{root}:r:{e.request_id}"
                found = await tx.get_json(key, OndemandView)
                if found is not None:
                    reason = e.reason if isinstance(e, ev.OndemandFailed) else found.reason
                    status = _STATUS[r.type]
                    tx.put_json(
                        key, msgspec.structs.replace(found, status=status, reason=reason, settled_at=r.at)
                    )
            elif isinstance(e, ev.OndemandForgotten):
                tx.delete_json(f"{root}:r:{e.request_id}")
            elif isinstance(e, ev.VmCheckedOut) and e.request_id:
                key = f"{root}:d:{e.request_id}"
                delivered: dict[str, list[str]] = dict(await tx.get_json(key, dict[str, list[str]]) or {})
                delivered[e.requested_as] = [*delivered.get(e.requested_as, []), r.vm]
                tx.put_json(key, delivered)
