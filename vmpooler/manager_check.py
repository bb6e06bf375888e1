"""``vmpooler manager --check``: the manager role's health answer, for compose and Kubernetes probes.

Healthy (exit 0, one line on stdout) when a manager process of this host has a heartbeat in
``<prefix>:{ctl}:members:manager`` younger than the lease TTL, and every configured pool's manager
lease is held by a live manager (of any host). Otherwise exit 1 with one line on stderr saying what
is wrong; Docker reserves exit code 2 of a health check. A manager process is "of this host" when
its name (``<hostname>:<pid>:<random>``, the lease holder) starts with this host's name, so in a
container the check answers for the manager of that container.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from commands.manager import LEASE_MS
from commands.settings import ConfigError, Settings
from events import Keys
from events.streams import text

from ._output import printable
from .redis_client import open_redis

__all__ = ["CHECK_TIMEOUT_S", "Health", "check_manager", "manager_health"]

CHECK_TIMEOUT_S = 5.0
"""How long the check waits for Redis before it answers unhealthy."""


@dataclass(frozen=True)
class Health:
    """A health answer: ``ok`` and the one line that says why."""

    ok: bool
    line: str


async def manager_health(
    redis: aioredis.Redis, keys: Keys, pools: Sequence[str], *, host: str, now_ms: int, ttl_ms: int = LEASE_MS
) -> Health:
    """Whether a manager of ``host`` is live at ``now_ms`` and every pool of ``pools`` has a live manager."""
    beats = cast(
        list[tuple[bytes, float]], await redis.zrange(keys.members("manager"), 0, -1, withscores=True)
    )
    live = {text(member) for member, at in beats if at >= now_ms - ttl_ms}
    ours = sorted(name for name in live if name.startswith(f"{host}:"))
    if not ours:
        seen = [at for member, at in beats if text(member).startswith(f"{host}:")]
        last = f"last heartbeat {(now_ms - max(seen)) / 1000:.0f} s ago" if seen else "no heartbeat"
        return Health(False, f"no live manager on {host} ({last}; live means within {ttl_ms / 1000:g} s)")
    holders = {pool: text(await redis.get(keys.lease(pool, "manager"))) for pool in pools}
    orphans = [pool for pool, holder in holders.items() if holder not in live]
    if orphans:
        return Health(False, f"manager {ours[0]} is live, but no live manager holds {', '.join(orphans)}")
    held = sum(holder in ours for holder in holders.values())
    return Health(True, f"manager {', '.join(ours)} is live and holds {held} of {len(pools)} pools")


async def check_manager(settings: Settings) -> int:
    """Run the check against the configured Redis (never starting an embedded one); the exit code."""
    try:
        handle = open_redis(settings, start_embedded=False)
    except (ConfigError, OSError) as exc:
        return _unhealthy(str(exc))
    try:
        health = await asyncio.wait_for(
            manager_health(
                handle.client,
                Keys(settings.redis.prefix),
                settings.pool_names,
                host=socket.gethostname(),
                now_ms=int(time.time() * 1000),
            ),
            CHECK_TIMEOUT_S,
        )
    except TimeoutError:
        return _unhealthy(f"Redis did not answer within {CHECK_TIMEOUT_S:g} s")
    except (RedisError, OSError) as exc:
        return _unhealthy(f"Redis: {exc}")
    finally:
        await handle.close()
    if not health.ok:
        return _unhealthy(health.line)
    print(printable(health.line))
    return 0


def _unhealthy(line: str) -> int:
    print(f"vmpooler: unhealthy: {printable(line)}", file=sys.stderr)
    return 1
