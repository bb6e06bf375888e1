"""What each user holds, for the per-user caps: running VMs and open on-demand requests.

Keys: in each pool, ``<rm:usage>:vms:<user>`` is the set of the user's running VMs and
``<rm:usage>:of`` maps VM -> user; in the control slot, ``<rm:usage>:od:<user>`` is the set of the
user's pending on-demand requests and ``<rm:usage>:od-of`` maps request -> user. Run it over the pool
streams and the control stream (``events.CONTROL``), as the on-demand status.
"""

from __future__ import annotations

from collections.abc import Sequence

import events as ev
from events import CONTROL, Keys, Recorded

from ._running import release, track_running
from ._tx import Tx

__all__ = ["UserUsage"]

_SETTLED = (ev.OndemandFulfilled, ev.OndemandFailed, ev.OndemandCancelled)


class UserUsage:
    name = "usage"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        root = keys.read_model(pool, self.name)
        if pool == CONTROL:
            await _requests(root, batch, tx)
        else:
            await track_running(tx, root, batch, lambda e: e.token_user, "vms")


async def _requests(root: str, batch: Sequence[Recorded], tx: Tx) -> None:
    held: dict[str, str | None] = {}  # this batch's view of request -> user
    for r in batch:
        e = r.event
        if isinstance(e, ev.OndemandAccepted) and e.token_user:
            tx.op("SADD", f"{root}:od:{e.token_user}", e.request_id)
            tx.op("HSET", f"{root}:od-of", e.request_id, e.token_user)
            held[e.request_id] = e.token_user
        elif isinstance(e, _SETTLED):
            await release(tx, root, "od", "od-of", e.request_id, held)
