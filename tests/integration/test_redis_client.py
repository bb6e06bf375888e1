"""The service's Redis client: bursts beyond the pool size wait for a connection instead of failing."""

from __future__ import annotations

import asyncio

from vmpooler.config import parse_settings
from vmpooler.redis_client import open_redis
from vmpooler.redis_server import RedisServer


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


async def test_no_request_fails_once_a_restarted_redis_answers(prefix: str) -> None:
    """Every pooled socket died with the old server; the first use of each finds that out (the pool's
    check, or the PING before a command on a connection idle past the health-check interval) and
    reconnects, so no command fails, and none is sent twice (INCR counts them)."""
    server = RedisServer(appendonly=False).start()
    settings = parse_settings({"redis": {"url": server.url, "prefix": prefix}}, env={})
    handle = open_redis(settings)
    try:
        await asyncio.gather(*(handle.client.blpop([f"{prefix}:x:{i}"], timeout=0.05) for i in range(64)))
        pool = handle.client.connection_pool
        server.kill()
        server = RedisServer(port=server.port, appendonly=False).start()
        for conn in pool._available_connections:  # idle past the health-check interval (no waiting for it)
            conn.next_health_check = -1
        replies = await asyncio.gather(
            *(handle.client.incr(f"{prefix}:n") for _ in range(128)), return_exceptions=True
        )
        assert [r for r in replies if isinstance(r, BaseException)] == []
        assert int(await handle.client.get(f"{prefix}:n")) == 128
    finally:
        await handle.close()
        server.stop()
