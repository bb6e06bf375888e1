"""The clone back-off of a pool, shared by every worker process through Redis (issue 10's clone storms).

A pool whose clones fail would otherwise fail a clone, request the next at once and churn names and
events as fast as the provider answers. Instead, after a failed clone no clone of the pool starts before
the back-off period ends; then exactly one clone (the probe) goes through and the period is extended by
its length while the probe runs. A failed probe doubles the period (``base_s`` doubling, at most ``cap_s``,
and never shorter than the ``retry_in`` the provider asked for, e.g. the rest of an open circuit breaker or
a quota pause); any successful clone ends the back-off. Clones waiting for the period stay ``cloning``, so
the pool stays at its size and requests no new names meanwhile.

State: the hash ``<prefix>:{<pool>}:work:backoff`` (fields ``failures``, ``delay`` ms, ``until`` ms of wall
clock), changed only by the single-key scripts below, so any number of workers share one period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from events import Keys

__all__ = ["Admission", "CloneBackoff"]

# ARGV: now. Returns {1, probe} (start a clone; probe 1 when it ends a back-off period) or {0, ms to wait}.
_ADMIT = """
local due = tonumber(redis.call('HGET', KEYS[1], 'until'))
if not due then return {1, 0} end
local now = tonumber(ARGV[1])
if now < due then return {0, due - now} end
redis.call('HSET', KEYS[1], 'until', now + (tonumber(redis.call('HGET', KEYS[1], 'delay')) or 0))
return {1, 1}
"""
# ARGV: now, probe (1/0), base ms, cap ms, at least ms, ttl ms. Returns the period (ms). A clone that was
# not the probe escalates only the first failure: clones in flight when an outage begins all fail at once.
_FAILED = """
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures')) or 0
if ARGV[2] == '1' or failures == 0 then failures = failures + 1 end
local delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(failures - 1, 40))
delay = math.floor(math.max(delay, tonumber(ARGV[5])))
local now = tonumber(ARGV[1])
local due = math.max(tonumber(redis.call('HGET', KEYS[1], 'until')) or 0, now + delay)
redis.call('HSET', KEYS[1], 'failures', failures, 'delay', delay, 'until', due)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return delay
"""


class Admission:
    """Whether a clone may start now: ``go``; if so, whether it is the period's ``probe``; else ``wait_s``."""

    __slots__ = ("go", "probe", "wait_s")

    def __init__(self, go: bool, probe: bool, wait_s: float) -> None:
        self.go = go
        self.probe = probe
        self.wait_s = wait_s


class CloneBackoff:
    """Per-pool clone back-off in Redis.

    Args:
        redis: client (bytes replies).
        keys: key names.
        base_s: the period after a first failure; doubled by every failed probe.
        cap_s: the longest period, and so the longest a pool waits after its provider recovers.
        ttl_s: a back-off nobody touches for this long is forgotten (a removed pool's, say).
        clock: wall-clock time in ms, shared by every worker (tests drive it).
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        base_s: float = 1.0,
        cap_s: float = 60.0,
        ttl_s: float = 3600.0,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError(f"clone back-off needs 0 < base <= cap, got {base_s} and {cap_s}")
        self.redis = redis
        self.keys = keys
        self.base_s = base_s
        self.cap_s = cap_s
        self.ttl_s = ttl_s
        self.clock = clock
        self._admit: Any = redis.register_script(_ADMIT)
        self._failed: Any = redis.register_script(_FAILED)

    def key(self, pool: str) -> str:
        return f"{self.keys.work(pool)}:backoff"

    async def admit(self, pool: str) -> Admission:
        """May a clone of ``pool`` start now? (The first one after a period is the probe.)"""
        go, value = await self._admit(keys=[self.key(pool)], args=[self.clock()])
        return Admission(bool(go), bool(go) and bool(value), 0.0 if go else int(value) / 1000)

    async def failed(self, pool: str, *, probe: bool, at_least_s: float = 0.0) -> float:
        """A clone of ``pool`` failed; returns the back-off period in seconds."""
        periods = (self.base_s, self.cap_s, at_least_s, self.ttl_s)
        args = [self.clock(), int(probe), *(round(s * 1000) for s in periods)]
        return int(await self._failed(keys=[self.key(pool)], args=args)) / 1000

    async def succeeded(self, pool: str) -> None:
        """A clone of ``pool`` succeeded: its provider works, clones start at once again."""
        await self.redis.delete(self.key(pool))
