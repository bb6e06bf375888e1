"""The service's Redis client: bursts beyond the pool size wait for a connection instead of failing."""

from __future__ import annotations

import asyncio

from vmpooler.config import parse_settings
from vmpooler.redis_client import open_redis


async def test_a_burst_beyond_the_pool_size_waits_instead_of_failing(redis_url: str, prefix: str) -> None:
    settings = parse_settings(
        {"redis": {"url": redis_url, "prefix": prefix, "connection_pool_size": 2}}, env={}
    )
    handle = open_redis(settings)
    try:
        # 500 commands in flight at once, as hundreds of worker handlers can be; each holds its
        # connection a moment (BLPOP with a short timeout), so the pool must make them wait.
        async def one(i: int) -> object:
            return await handle.client.blpop([f"{prefix}:nothing:{i}"], timeout=0.05)

        assert await asyncio.gather(*(one(i) for i in range(500))) == [None] * 500
    finally:
        await handle.close()
