"""Slots for migrations in flight, limited by ``migration_limit`` (vmpooler's ``vmpooler__migration`` set).

:class:`RedisSlots` counts across every process of one provider (as vmpooler counts across managers): a
sorted set of VM names scored by lease deadlines, so a slot held by a process that died frees itself after
``lease`` seconds. :class:`LocalSlots` counts in this process only (no Redis given, e.g. in tests).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["LocalSlots", "MigrationSlots", "RedisSlots"]

# KEYS[1] the set; ARGV: now, deadline, vm, limit. Drops expired leases, then takes a slot if one is free
# (a VM that holds one already keeps it).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 1
"""


class MigrationSlots(Protocol):
    """At most ``limit`` migrations at once; ``limit`` 0 turns migration off."""

    limit: int

    async def acquire(self, vm: str) -> bool:
        """Take a slot for ``vm``; ``False`` when all are taken (or they cannot be counted)."""
        ...

    async def release(self, vm: str) -> None:
        """Give ``vm``'s slot back."""
        ...


class LocalSlots:
    """Slots counted in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.holders: set[str] = set()

    async def acquire(self, vm: str) -> bool:
        if vm in self.holders or len(self.holders) < self.limit:
            self.holders.add(vm)
            return True
        return False

    async def release(self, vm: str) -> None:
        self.holders.discard(vm)


class RedisSlots:
    """Slots shared through Redis by every process using ``key``; a lease lasts ``lease`` seconds.

    When Redis cannot be reached, :meth:`acquire` answers ``False``: the VM is not migrated (migration is an
    optimisation; the checkout must not fail for it).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        limit: int,
        *,
        lease: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.key = key
        self.limit = limit
        self.lease = lease
        self._clock = clock
        self._acquire: Any = redis.register_script(_ACQUIRE)

    async def acquire(self, vm: str) -> bool:
        now = self._clock()
        try:
            taken = await self._acquire(keys=[self.key], args=[now, now + self.lease, vm, self.limit])
        except RedisError:
            return False
        return bool(taken)

    async def release(self, vm: str) -> None:
        with contextlib.suppress(RedisError):  # else the lease runs out by itself
            await self.redis.zrem(self.key, vm)

    async def holders(self) -> list[str]:
        """VMs holding a slot (expired leases included until the next :meth:`acquire`)."""
        return [
            m.decode() if isinstance(m, bytes) else str(m) for m in await self.redis.zrange(self.key, 0, -1)
        ]
