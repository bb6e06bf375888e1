"""The dashboard over HTTP: its security headers and content types."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.integration._api import api_env, make_settings

SETTINGS = make_settings([{"name": "pool1", "size": 1}])


async def test_the_page_and_its_files_carry_security_headers_and_one_charset(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with api_env(redis, redis_url, prefix, SETTINGS) as api:
        page = await api.client.get("/dashboard/")
        script = await api.client.get("/dashboard/static/dashboard.js")
        style = await api.client.get("/dashboard/static/dashboard.css")
        data = await api.client.get("/dashboard/data")
        missing = await api.client.get("/dashboard/static/nope.js")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    for response in (page, script, style):
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
    for response in (page, script, style, data, missing):
        assert response.headers["x-content-type-options"] == "nosniff"
