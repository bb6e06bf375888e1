"""``/healthcheck``: Redis reachability, projector lag, worker and manager liveness, 200 or 503 with a
JSON body that says why."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

import events as ev
from commands.handlers import Handlers
from commands.pool import Meta
from commands.provider import PoolTarget
from commands.worker import Worker
from providers.dummy import DummyProvider
from tests.integration._api import ApiEnv, api_env, make_settings

Env = Callable[..., AbstractAsyncContextManager[ApiEnv]]
SETTINGS = make_settings([{"name": "pool1", "size": 2}, {"name": "pool2", "size": 1}])


@pytest.fixture
def env(redis: aioredis.Redis, redis_url: str, prefix: str) -> Env:
    return lambda **kw: api_env(redis, redis_url, prefix, SETTINGS, **kw)


async def health(api: ApiEnv) -> tuple[int, dict[str, Any]]:
    response = await api.client.get("/healthcheck")
    assert response.headers["content-type"].startswith("application/json")
    return response.status_code, msgspec.json.decode(response.content)


async def managed(api: ApiEnv, *pools: str) -> None:
    """A live manager holds these pools' leases (all pools by default), as ``Manager`` does."""
    for pool in pools or SETTINGS.pool_names:
        await api.redis.set(api.keys.lease(pool, "manager"), "m1", px=15_000)


async def work_through(api: ApiEnv, prefix: str) -> Worker:
    """A real worker (dummy provider) takes everything waiting on the pool streams once."""
    provider = DummyProvider("dummy", api.redis, prefix=prefix, options={})
    handlers = Handlers(
        api.commands, lambda pool: (provider, PoolTarget(name=pool, template="t")), worker="w1"
    )
    worker = Worker(api.redis, api.keys, handlers, list(SETTINGS.pool_names), consumer="w1")
    await worker.setup()
    while await worker.step(block_ms=None):
        await worker.drain()
    await worker.drain()
    return worker


async def test_healthy_body_keeps_ok_true_and_explains(env: Env) -> None:
    async with env() as api:
        await managed(api)
        status, body = await health(api)
        assert status == 200
        assert body == {
            "ok": True,
            "redis": True,
            "lag": {},
            "workers": {"live": 0, "waiting": 0},
            "managers": {"unmanaged": 0},
            "problems": [],
        }


async def test_no_live_manager_is_unhealthy_even_when_idle(env: Env) -> None:
    async with env() as api:
        status, body = await health(api)  # nothing ever ran: no manager holds any pool
        assert (status, body["ok"], body["managers"]) == (503, False, {"unmanaged": 2})
        assert body["problems"] == ["no live manager holds 2 pool(s): pool1, pool2"]
        await managed(api, "pool1")
        status, body = await health(api)
        assert (status, body["problems"]) == (503, ["no live manager holds 1 pool(s): pool2"])
        await managed(api)
        assert (await health(api))[0] == 200
        # the manager dies: its leases run out after their TTL (here: at once), and so does the health
        await api.redis.delete(*(api.keys.lease(p, "manager") for p in SETTINGS.pool_names))
        assert (await health(api))[0] == 503


async def test_work_waiting_without_a_live_worker_is_unhealthy(env: Env, prefix: str) -> None:
    async with env() as api:
        await managed(api)
        await api.seed("pool1", 2)
        status, body = await health(api)
        assert status == 503
        assert body["ok"] is False
        assert body["workers"]["live"] == 0
        assert body["workers"]["waiting"] > 0
        assert body["problems"] == [
            f"{body['workers']['waiting']} entries wait for a worker and no worker is alive"
        ]
        await work_through(api, prefix)
        status, body = await health(api)
        assert (status, body["ok"], body["workers"], body["problems"]) == (
            200,
            True,
            {"live": 1, "waiting": 0},
            [],
        )
        assert body["lag"]["workers"] == 0
        assert body["lag"]["proj:status"] == 0


async def test_a_projection_far_behind_is_unhealthy_until_it_catches_up(env: Env, prefix: str) -> None:
    async with env() as api:
        await managed(api)
        [vm, _] = await api.seed("pool1", 2)
        await work_through(api, prefix)
        tags = [(vm, ev.VmTagged(tags={"n": str(i)})) for i in range(1001)]
        await api.commands.append("pool1", tags, Meta("test", "health"))
        status, body = await health(api)
        assert status == 503
        assert body["lag"]["proj:vm"] == 1001
        assert "projection vm is 1001 entries behind on pool1" in body["problems"]
        await api.project()
        status, body = await health(api)
        assert (status, body["ok"], body["lag"]["proj:vm"]) == (200, True, 0)


async def test_redis_down_is_unhealthy(env: Env) -> None:
    async with env(app_redis_url="redis://127.0.0.1:1/0") as down:
        status, body = await health(down)
        assert (status, body) == (503, {"ok": False, "redis": False})
