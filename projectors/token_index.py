"""Running VMs per token: which VMs a token checked out and still holds."""

from __future__ import annotations

from collections.abc import Sequence

from events import Keys, Recorded

from ._running import track_running
from ._tx import Tx

__all__ = ["TokenIndex"]


class TokenIndex:
    """``<rm:token>:t:<token hash>`` is the set of running VMs; ``<rm:token>:of`` maps VM → token hash."""

    name = "token"

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        await track_running(tx, keys.read_model(pool, self.name), batch, lambda e: e.token_hash, "t")
