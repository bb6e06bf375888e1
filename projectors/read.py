"""Reading the read models: what the API and the dashboard see."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from events import CONTROL, Keys
from events.streams import position, text, xrevrange

from .ondemand import OndemandStatus, OndemandView
from .pool_status import PoolStatus
from .token_index import TokenIndex
from .views import PoolStatusView, VmView
from .vm_detail import VmDetail

__all__ = ["ReadModels"]


_vm_decoder = msgspec.json.Decoder(VmView)
_status_decoder = msgspec.json.Decoder(PoolStatusView)
_od_decoder = msgspec.json.Decoder(OndemandView)
_delivered_decoder = msgspec.json.Decoder(dict[str, list[str]])


class ReadModels:
    """Queries over the projections (never over the decision state or the log)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def pool_of(self, vm: str) -> str | None:
        """The pool a VM name belongs to (from the name registry), or ``None``."""
        raw = await self.redis.hget(self.keys.names(), vm)
        return text(raw) or None

    async def vm(self, name: str, *, fresh_within: float = 0.5) -> VmView | None:
        """The VM's view, or ``None`` if no VM of that name was ever projected.

        Read-your-writes: the view reflects every event appended to the VM's pool before this call
        (waiting up to ``fresh_within`` seconds for the projection to get there), so a client that
        checks out a VM and then asks for it sees it running.
        """
        pool = await self.pool_of(name)
        if pool is None:
            return None
        await self.caught_up(pool, VmDetail.name, fresh_within)
        raw = await self.redis.get(f"{self.keys.read_model(pool, VmDetail.name)}:v:{name}")
        return _vm_decoder.decode(raw) if raw is not None else None

    async def caught_up(self, pool: str, projection: str, within: float) -> bool:
        """Wait until ``projection`` has folded everything in ``pool``'s log as of now (at most
        ``within`` seconds); returns whether it got there."""
        last = await xrevrange(self.redis, self.keys.stream(pool), count=1)
        if not last:
            return True
        target = position(last[0][0].decode())
        checkpoint_key = f"{self.keys.read_model(pool, projection)}:checkpoint"
        deadline = time.monotonic() + within
        delay = 0.001
        while True:
            checkpoint = text(await self.redis.get(checkpoint_key))
            if checkpoint and position(checkpoint) >= target:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

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

    async def ondemand(
        self, request_id: str, *, fresh_within: float = 0.5
    ) -> tuple[OndemandView, dict[str, list[tuple[str, str]]]] | None:
        """An on-demand request and the VMs delivered to it (requested name -> ``(pool, vm)``s, pools
        in the request's order), or ``None`` if there is no such request. Read-your-writes as
        :meth:`vm`: waits (up to ``fresh_within``) for the projection to catch up with the logs."""
        name = OndemandStatus.name
        await self.caught_up(CONTROL, name, fresh_within)
        raw = await self.redis.get(f"{self.keys.control_read_model(name)}:r:{request_id}")
        if raw is None:
            return None
        view = _od_decoder.decode(raw)
        pools = list(dict.fromkeys(p for wanted in view.requested.values() for p in wanted))
        delivered: dict[str, list[tuple[str, str]]] = {}
        for pool in pools:
            await self.caught_up(pool, name, fresh_within)
            found = await self.redis.get(f"{self.keys.read_model(pool, name)}:d:{request_id}")
            for requested, vms in (_delivered_decoder.decode(found) if found is not None else {}).items():
                delivered.setdefault(requested, []).extend((pool, vm) for vm in vms)
        return view, delivered
