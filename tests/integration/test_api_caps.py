"""Per-user caps (``:auth: max_running_per_user``, ``max_ondemand_requests_per_user``): counted per
user whatever token is used, from the ``usage`` projection, which a rebuild reproduces."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from events import CONTROL
from projectors import ProjectionRunner, UserUsage
from tests.integration._api import ApiEnv, api_env, body, make_settings

POOLS = [{"name": "pool1", "size": 6}, {"name": "pool2", "size": 2}]
CAPPED = make_settings(
    POOLS,
    auth={"provider": "dummy", "max_running_per_user": 3, "max_ondemand_requests_per_user": 2},
)
STREAMS = [*CAPPED.pool_names, CONTROL]


async def token_of(api: ApiEnv, user: str) -> dict[str, str]:
    basic = {"Authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()}
    return {"X-AUTH-TOKEN": body(await api.client.post("/api/v3/token", headers=basic))["token"]}


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, CAPPED) as env:
        await env.seed("pool1", 6)
        await env.seed("pool2", 2)
        yield env


async def usage(api: ApiEnv) -> None:
    await ProjectionRunner(api.redis, api.keys, [UserUsage()], STREAMS, consumer="caps").catch_up()


async def test_running_vms_are_capped_per_user_not_per_token(api: ApiEnv) -> None:
    tokens = [await token_of(api, "alice") for _ in range(3)]
    got = await api.client.post("/api/v3/vm/pool1+pool2", headers=tokens[0])
    assert got.status_code == 200
    await usage(api)
    one = await api.client.post("/api/v3/vm/pool1", headers=tokens[1])
    assert one.status_code == 200
    await usage(api)
    refused = await api.client.post("/api/v3/vm/pool1", headers=tokens[2])  # a fresh token: same user
    assert (refused.status_code, body(refused)) == (
        403,
        {"ok": False, "error": "user alice would hold 4 running VMs; the limit is 3"},
    )
    assert (await api.client.post("/api/v3/vm/pool1", headers=await token_of(api, "bob"))).status_code == 200
    assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200  # no token: not capped
    # giving one back makes room
    vm = body(one)["pool1"]["hostname"]
    assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=tokens[1])).status_code == 200
    await usage(api)
    assert (await api.client.post("/api/v3/vm/pool1", headers=tokens[2])).status_code == 200


async def test_pending_ondemand_requests_are_capped_per_user(api: ApiEnv) -> None:
    alice = [await token_of(api, "alice") for _ in range(3)]
    for i in range(2):
        made = await api.client.post("/api/v3/ondemandvm", json={"pool1": 1}, headers=alice[i])
        assert made.status_code == 201, made.text
        await usage(api)
    refused = await api.client.post("/api/v3/ondemandvm", json={"pool1": 1}, headers=alice[2])
    assert (refused.status_code, body(refused)) == (
        403,
        {"ok": False, "error": "user alice has 2 pending on-demand requests; the limit is 2"},
    )
    # a cancelled request no longer counts
    rid = body(made)["request_id"]
    assert (await api.client.delete(f"/api/v3/ondemandvm/{rid}", headers=alice[1])).status_code == 200
    await usage(api)
    assert (
        await api.client.post("/api/v3/ondemandvm", json={"pool1": 1}, headers=alice[2])
    ).status_code == 201


async def test_the_usage_projection_rebuilds_to_the_same_counts(api: ApiEnv) -> None:
    alice = await token_of(api, "alice")
    got = body(await api.client.post("/api/v3/vm/pool1+pool1", headers=alice))
    await api.client.delete(f"/api/v3/vm/{got['pool1']['hostname'][0]}", headers=alice)
    await api.client.post("/api/v3/ondemandvm", json={"pool2": 1}, headers=alice)
    await usage(api)

    async def counts() -> list[object]:
        root = api.keys.read_model
        return [
            await api.redis.smembers(f"{root('pool1', 'usage')}:vms:alice"),
            await api.redis.smembers(f"{root(CONTROL, 'usage')}:od:alice"),
        ]

    live = await counts()
    assert [len(x) for x in live] == [1, 1]  # type: ignore[arg-type]
    await ProjectionRunner(api.redis, api.keys, [UserUsage()], STREAMS, consumer="rebuild").rebuild()
    assert await counts() == live
