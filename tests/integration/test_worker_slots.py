"""Slow boots must not starve clones: readiness polling holds no provider slot (task_limit)."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from vmpooler.config import parse_settings
from vmpooler.redis_client import RedisHandle
from vmpooler.wiring import Service


async def test_booting_vms_do_not_hold_task_limit_slots(redis_url: str, prefix: str) -> None:
    settings = parse_settings(
        {
            "config": {"task_limit": 1},
            "providers": {"dummy": {"boot_time": 3600}},  # never ready during the test
            "pools": [{"name": "slow", "template": "t/slow", "size": 4}],
            "redis": {"url": redis_url, "prefix": prefix},
        }
    )
    client = aioredis.Redis.from_url(redis_url)
    service = Service(settings, RedisHandle(client, redis_url))
    manager, worker = service.manager(), service.worker()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(manager.run(stop)), asyncio.create_task(worker.run(stop, block_ms=50))]
    try:
        # With one provider slot, four clones still all finish (they boot for an hour).
        deadline = time.monotonic() + 20
        while await client.zcard(service.keys.in_state("slow", "booting")) < 4:
            assert time.monotonic() < deadline, "clones starved behind VMs that are still booting"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await client.aclose()
