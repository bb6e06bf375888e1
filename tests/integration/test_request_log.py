"""``:config: request_logger``: a line per request, and never a body (so never a new token)."""

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
        ["GET", "/api/v3/vm/nosuchvm", "404"],
    ]
    assert all(line.split()[3].endswith("ms") for line in lines)
    assert token not in caplog.text
