"""Rate limiting over HTTP: each class, the 429 answer, windows that reset under steady traffic
(driven by the injected clock), separate clients, failing open, and off by default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from commands.tokens import Tokens
from tests.integration._api import T0, ApiEnv, api_env, body, make_settings
from tests.ldap.slapd import free_port
from web.ratelimit import limit_class

POOLS = [{"name": "pool1", "size": 1}]
LIMITS = {
    "global_per_ip": {"limit": 3, "period": 10},
    "authenticated": {"limit": 4},  # period: the default 60 s
    "vm_creation": {"limit": 2, "period": 10},
    "vm_deletion": {"limit": 2, "period": 10},
}
LIMITED = make_settings(POOLS, config={"rate_limiting_enabled": True}, rate_limits=LIMITS)


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, LIMITED) as env:
        yield env


async def call(api: ApiEnv, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return await api.client.request(method, path, headers=headers or {})


def refused(response: Any, limit: int, period: int, retry_after: int) -> None:
    assert response.status_code == 429, response.text
    expected = {"ok": False, "error": "Rate limit exceeded", "limit": limit, "period": period}
    assert body(response) == {**expected, "retry_after": retry_after}
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["retry-after"] == str(retry_after)
    assert int(response.headers["x-ratelimit-reset"]) == (T0 // 1000 // period + 1) * period


@pytest.mark.parametrize(
    ("method", "path", "token", "expected"),
    [
        ("POST", "/api/v3/vm", False, "vm_creation"),
        ("POST", "/api/v3/vm/pool1+pool1", True, "vm_creation"),
        ("POST", "/api/v3/vm/x/snapshot", False, "vm_creation"),
        ("POST", "/api/v3/ondemandvm", True, "vm_creation"),
        ("DELETE", "/api/v3/vm/x", True, "vm_deletion"),
        ("DELETE", "/api/v3/ondemandvm/abc", False, "vm_deletion"),
        ("GET", "/api/v3/vm/x", True, "authenticated"),
        ("POST", "/api/v3/token", True, "authenticated"),
        ("GET", "/api/v3/status", False, "global_per_ip"),
        ("PUT", "/api/v3/vm/x", False, "global_per_ip"),
        ("POST", "/api/v3/vmware", False, "global_per_ip"),
    ],
)
def test_limit_class(method: str, path: str, token: bool, expected: str) -> None:
    assert limit_class(method, path, token) == expected


async def test_global_per_ip_counts_and_refuses(api: ApiEnv) -> None:
    for remaining in (2, 1, 0):
        response = await call(api, "GET", "/api/v3/vm")
        assert response.status_code == 200
        assert (response.headers["x-ratelimit-limit"], response.headers["x-ratelimit-remaining"]) == (
            "3",
            str(remaining),
        )
    refused(await call(api, "GET", "/api/v3/status"), limit=3, period=10, retry_after=10)


async def test_window_resets_after_period_under_steady_traffic(api: ApiEnv) -> None:
    for _ in range(3):
        assert (await call(api, "GET", "/api/v3/vm")).status_code == 200
    # vmpooler pushed the expiry back on every request, so a client calling once a second was never
    # let back in; here each second's refusal still leaves the window ending on time.
    for second in range(10):
        refused(await call(api, "GET", "/api/v3/vm"), limit=3, period=10, retry_after=10 - second)
        api.clock.advance(seconds=1)
    response = await call(api, "GET", "/api/v3/vm")
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "2"


async def test_vm_creation_and_deletion_have_their_own_counts(api: ApiEnv) -> None:
    for _ in range(2):
        assert (await call(api, "POST", "/api/v3/vm/pool1")).status_code == 503  # empty pool, counted
    refused(await call(api, "POST", "/api/v3/vm", {}), limit=2, period=10, retry_after=10)
    for _ in range(2):
        assert (await call(api, "DELETE", "/api/v3/vm/nosuch")).status_code == 404
    refused(await call(api, "DELETE", "/api/v3/vm/nosuch"), limit=2, period=10, retry_after=10)
    assert (await call(api, "GET", "/api/v3/vm")).status_code == 200  # global_per_ip untouched


async def test_authenticated_is_per_user(api: ApiEnv) -> None:
    tokens = Tokens(api.redis, api.keys, api.clock)
    alice = {"X-AUTH-TOKEN": await tokens.create("alice")}
    bob = {"X-AUTH-TOKEN": await tokens.create("bob")}
    for _ in range(4):
        assert (await call(api, "GET", "/api/v3/vm", alice)).status_code == 200
    refused(await call(api, "GET", "/api/v3/vm", alice), limit=4, period=60, retry_after=60)
    assert (await call(api, "GET", "/api/v3/vm", bob)).status_code == 200
    assert (await call(api, "GET", "/api/v3/vm")).status_code == 200  # by IP: another client

    keys = [k.decode() async for k in api.redis.scan_iter(match=f"{api.keys.prefix}:*ratelimit*")]
    assert len(keys) == 3
    for key in keys:
        assert alice["X-AUTH-TOKEN"] not in key  # clients are hashed
        assert bob["X-AUTH-TOKEN"] not in key
        assert 0 < await api.redis.pttl(key) <= 61_000


async def test_more_tokens_buy_no_more_requests(api: ApiEnv) -> None:
    # vmpooler counts per token, and a user may mint any number: 5 tokens got 75 of 75 through 15
    tokens = Tokens(api.redis, api.keys, api.clock)
    mine = [{"X-AUTH-TOKEN": await tokens.create("carol")} for _ in range(5)]
    statuses = [(await call(api, "GET", "/api/v3/vm", mine[i % 5])).status_code for i in range(10)]
    assert statuses == [200] * 4 + [429] * 6


async def test_made_up_tokens_count_by_address(api: ApiEnv) -> None:
    # vmpooler keyed the count by whatever token was sent: a fresh one per request dodged every limit
    for i in range(3):
        assert (await call(api, "GET", "/api/v3/vm", {"X-AUTH-TOKEN": f"made-up-{i}"})).status_code == 200
    refused(
        await call(api, "GET", "/api/v3/vm", {"X-AUTH-TOKEN": "made-up-3"}),
        limit=3,
        period=10,
        retry_after=10,
    )
    refused(await call(api, "GET", "/api/v3/vm"), limit=3, period=10, retry_after=10)


async def test_disabled_by_default(redis: aioredis.Redis, redis_url: str, prefix: str) -> None:
    async with api_env(redis, redis_url, prefix, make_settings(POOLS, rate_limits=LIMITS)) as env:
        for _ in range(10):
            response = await call(env, "GET", "/api/v3/vm")
            assert response.status_code == 200
            assert "x-ratelimit-limit" not in response.headers
        assert [k async for k in env.redis.scan_iter(match=f"{prefix}:*")] == []


async def test_redis_down_fails_open(redis: aioredis.Redis, redis_url: str, prefix: str) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with api_env(redis, redis_url, prefix, LIMITED, app_redis_url=dead) as env:
        for _ in range(5):  # more than global_per_ip allows
            response = await call(env, "GET", "/api/v3/vm")
            assert response.status_code == 200
            assert "x-ratelimit-limit" not in response.headers
