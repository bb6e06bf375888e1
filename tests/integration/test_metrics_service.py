"""The composition root wires the metric sources into the manager role: a real service (dummy
provider) clones VMs and its metrics projection and sampler reach a real statsd listener."""

from __future__ import annotations

import asyncio

from tests.integration._metrics_env import UdpListener, until
from vmpooler.config import parse_settings
from vmpooler.redis_client import open_redis
from vmpooler.wiring import Service


async def test_manager_role_emits_clone_ready_and_sampled_metrics(redis_url: str, prefix: str) -> None:
    async with UdpListener.running() as udp:
        doc = {
            "redis": {"url": redis_url, "prefix": prefix},
            "pools": [{"name": "pool1", "template": "t/pool1", "size": 2}],
            "statsd": {"server": "127.0.0.1", "port": udp.port, "prefix": "vmp"},
        }
        service = Service(parse_settings(doc, env={}), open_redis(parse_settings(doc, env={})))
        stop = asyncio.Event()
        task = asyncio.create_task(service.run_manager(stop))

        def seen(start: str) -> bool:
            return any(line.startswith(start) for line in udp.lines)

        try:
            for name in ("vmp.vmpooler_clone.pool1:", "vmp.time_to_ready_state.pool1:", "vmp.ready.pool1:"):
                await until(lambda name=name: seen(name), name, within=20)
            # one sampling round sends many datagrams; wait for each rather than assume their order
            for name in ("vmp.consumer_lag.workers.pool1:", "vmp.live_workers:", "vmp.stream_length.pool1:"):
                await until(lambda name=name: seen(name), f"the sampler's {name}", within=20)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            await service.close()
