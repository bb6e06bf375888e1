"""Leases: at most one holder of a named duty at a time, handed over when the holder stops renewing."""

from __future__ import annotations

from redis.asyncio import Redis

__all__ = ["Lease"]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """Take-or-renew leases for one holder.

    Args:
        redis: client.
        holder: this process's unique name.
        ttl_ms: how long a lease lasts without renewal (the fail-over time).
    """

    def __init__(self, redis: Redis, holder: str, ttl_ms: int) -> None:
        self.redis = redis
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def hold(self, key: str) -> bool:
        """Renew the lease at ``key`` if we hold it, else try to take it; True if we hold it now."""
        if await self._renew(keys=[key], args=[self.holder, self.ttl_ms]):
            return True
        return bool(await self.redis.set(key, self.holder, nx=True, px=self.ttl_ms))

    async def release(self, key: str) -> None:
        """Give the lease up at once if we hold it (compare-and-delete, so never someone else's)."""
        await self._release(keys=[key], args=[self.holder])
