"""Reading the read models: what the API and the dashboard see."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from events import Keys
from events.streams import text

from .pool_status import PoolStatus
from .token_index import TokenIndex
from .views import PoolStatusView, VmView
from .vm_detail import VmDetail

__all__ = ["ReadModels"]

_vm_decoder = msgspec.json.Decoder(VmView)
_status_decoder = msgspec.json.Decoder(PoolStatusView)


class ReadModels:
    """Queries over the projections (never over the decision state or the log)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def pool_of(self, vm: str) -> str | None:
        """The pool a VM name belongs to (from the name registry), or ``None``."""
        raw = await self.redis.hget(self.keys.names(), vm)
        return text(raw) or None

    async def vm(self, name: str) -> VmView | None:
        """The VM's view, or ``None`` if no VM of that name was ever projected."""
        pool = await self.pool_of(name)
        if pool is None:
            return None
        raw = await self.redis.get(f"{self.keys.read_model(pool, VmDetail.name)}:v:{name}")
        return _vm_decoder.decode(raw) if raw is not None else None

    async def vm_positions(self, pool: str, name: str) -> list[str]:
        """Stream positions of every event about the VM, oldest first."""
        raw = await self.redis.lrange(f"{self.keys.read_model(pool, VmDetail.name)}:h:{name}", 0, -1)
        return [text(r) for r in raw]

    async def pool_status(self, pools: Sequence[str]) -> dict[str, PoolStatusView]:
        """Status of each pool (an empty view for a pool with no events yet), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.get(self.keys.read_model(pool, PoolStatus.name))
            raws = await pipe.execute()
        return {
            pool: _status_decoder.decode(raw) if raw is not None else PoolStatusView(pool=pool)
            for pool, raw in zip(pools, raws, strict=True)
        }

    async def running_for_token(self, token_hash: str, pools: Sequence[str]) -> dict[str, list[str]]:
        """Pool → running VMs checked out with the token whose hash is ``token_hash``."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.smembers(f"{self.keys.read_model(pool, TokenIndex.name)}:t:{token_hash}")
            raws = await pipe.execute()
        return {pool: sorted(m.decode() for m in raw) for pool, raw in zip(pools, raws, strict=True) if raw}
