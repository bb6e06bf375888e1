"""``:config: request_logger``: a line per request, never a body (so never a new token), and the route
template rather than the path (so never a token in a path); the error handlers' lines likewise."""

from __future__ import annotations

import base64
import logging

import pytest
import redis.asyncio as aioredis

from tests.integration._api import api_env, body, make_settings

POOLS = [{"name": "pool1", "size": 1}]
BASIC = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cr3t").decode()}


@pytest.mark.parametrize("enabled", [True, False])
async def test_requests_are_logged_without_bodies(
    redis: aioredis.Redis, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture, enabled: bool
) -> None:
    settings = make_settings(POOLS, auth={"provider": "dummy"}, config={"request_logger": enabled})
    caplog.set_level(logging.INFO, logger="vmpooler.requests")
    async with api_env(redis, redis_url, prefix, settings) as api:
        token = body(await api.client.post("/api/v3/token", headers=BASIC))["token"]
        assert (await api.client.get("/api/v3/vm/nosuchvm")).status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "vmpooler.requests"]
    if not enabled:
        assert lines == []
        return
    assert [line.split()[:3] for line in lines] == [
        ["POST", "/api/v3/token", "200"],
        ["GET", "/api/v3/vm/{hostname}", "404"],
    ]
    assert all(line.split()[3].endswith("ms") for line in lines)
    assert token not in caplog.text


async def test_no_token_in_a_path_reaches_any_log(
    redis: aioredis.Redis, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(POOLS, auth={"provider": "dummy"}, config={"request_logger": True})
    caplog.set_level(logging.INFO)
    async with api_env(redis, redis_url, prefix, settings) as api:
        token = body(await api.client.post("/api/v3/token", headers=BASIC))["token"]
        assert (await api.client.get(f"/api/v3/token/{token}")).status_code == 200
        assert (await api.client.delete(f"/api/v3/token/{token}", headers=BASIC)).status_code == 200
    async with api_env(redis, redis_url, prefix, settings, app_redis_url="redis://127.0.0.1:1/0") as down:
        assert (await down.client.get(f"/api/v3/token/{token}")).status_code == 503
    lines = [r.getMessage() for r in caplog.records if r.name == "vmpooler.requests"]
    assert [line.split()[:3] for line in lines][1:] == [
        ["GET", "/api/v3/token/{token}", "200"],
        ["DELETE", "/api/v3/token/{token}", "200"],
        ["GET", "/api/v3/token/{token}", "503"],
    ]
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]  # not the client's
    assert any("Redis unavailable" in line for line in ours)
    assert not [line for line in ours if token in line]
