"""Tokens and auth, black-box over HTTP: token endpoints, and the token rules of the VM endpoints."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from commands.settings import ConfigError
from tests.integration._api import ApiEnv, api_env, body, make_settings
from vmpooler.config import parse_settings
from vmpooler.redis_client import RedisHandle
from vmpooler.wiring import Service

POOLS = [{"name": "pool1", "template": "templates/pool1", "size": 2}]
AUTH = make_settings(
    POOLS, auth={"provider": "dummy", "admins": "root"}, config={"vm_lifetime": 6, "vm_lifetime_auth": 48}
)
NO_AUTH = make_settings(POOLS)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE, BOB = basic("alice", "s3cr3t"), basic("bob", "hunter2")


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, AUTH) as env:
        await env.seed("pool1", 2)
        yield env


async def new_token(api: ApiEnv, headers: dict[str, str] = ALICE) -> str:
    response = await api.client.post("/api/v3/token", headers=headers)
    assert response.status_code == 200, response.text
    token = body(response)["token"]
    assert isinstance(token, str)
    return token


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v3/token"),
        ("POST", "/api/v3/token"),
        ("GET", "/api/v3/token/abc"),
        ("DELETE", "/api/v3/token/abc"),
    ],
)
async def test_token_endpoints_are_404_without_auth(
    redis: aioredis.Redis, redis_url: str, prefix: str, method: str, path: str
) -> None:
    async with api_env(redis, redis_url, prefix, NO_AUTH) as env:
        response = await env.client.request(method, path, headers=ALICE)
        assert (response.status_code, body(response)) == (404, {"ok": False})


@pytest.mark.parametrize(
    "headers", [{}, basic("same", "same"), {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}]
)
async def test_bad_basic_credentials_are_401_with_a_challenge(api: ApiEnv, headers: dict[str, str]) -> None:
    response = await api.client.post("/api/v3/token", headers=headers)
    assert (response.status_code, body(response)) == (401, {"ok": False})
    assert response.headers["www-authenticate"] == 'Basic realm="Authentication required"'


async def test_create_list_show_and_revoke_a_token(api: ApiEnv) -> None:
    token = await new_token(api)
    assert re.fullmatch(r"[a-y][a-z0-9]{31}", token)
    # stored hashed only: the token appears in no key and no value of this installation
    async for key in api.redis.scan_iter(match=f"{api.keys.prefix}:*"):
        assert token.encode() not in key
        kind = await api.redis.type(key)
        if kind == b"hash":
            for k, v in (await api.redis.hgetall(key)).items():
                assert token.encode() not in k + v
        elif kind == b"string":
            assert token.encode() not in (await api.redis.get(key) or b"")
        elif kind == b"stream":
            for _, fields in await api.redis.xrange(key):
                assert all(token.encode() not in v for v in fields.values())

    listed = await api.client.get("/api/v3/token", headers=ALICE)
    assert listed.status_code == 200
    (digest,) = [k for k in body(listed) if k != "ok"]
    assert body(listed)[digest]["last"] == "never"
    assert (await api.client.get("/api/v3/token", headers=BOB)).status_code == 404  # bob has none

    shown = await api.client.get(f"/api/v3/token/{token}")
    assert shown.status_code == 200
    assert body(shown)[token]["user"] == "alice"
    assert "vms" not in body(shown)[token]

    assert (await api.client.delete(f"/api/v3/token/{token}", headers=BOB)).status_code == 401  # not bob's
    assert (await api.client.delete(f"/api/v3/token/{token}", headers=ALICE)).status_code == 200
    assert (await api.client.get(f"/api/v3/token/{token}")).status_code == 404
    assert (await api.client.delete(f"/api/v3/token/{token}", headers=ALICE)).status_code == 401

    types = [f[b"type"] for _, f in await api.redis.xrange(api.keys.control_stream())]
    assert types == [b"token.created", b"token.revoked"]


async def test_checkout_with_a_token_owns_the_vm(api: ApiEnv) -> None:
    token = await new_token(api)
    bad = await api.client.post("/api/v3/vm/pool1", headers={"X-AUTH-TOKEN": "nosuchtoken"})
    assert (bad.status_code, body(bad)) == (401, {"ok": False})

    taken = await api.client.post("/api/v3/vm/pool1", headers={"X-AUTH-TOKEN": token})
    assert taken.status_code == 200
    vm = body(taken)["pool1"]["hostname"].split(".")[0]
    await api.project()
    detail = body(await api.client.get(f"/api/v3/vm/{vm}"))[vm]
    assert detail["lifetime"] == 48  # vm_lifetime_auth
    shown = body(await api.client.get(f"/api/v3/token/{token}"))[token]
    assert shown["vms"] == {"running": [vm]}
    assert "last" in shown

    other = await new_token(api, BOB)
    for headers in ({}, {"X-AUTH-TOKEN": other}):
        assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=headers)).status_code == 401
        put = await api.client.put(f"/api/v3/vm/{vm}", json={"lifetime": 2}, headers=headers)
        assert put.status_code == 401
        disk = await api.client.post(f"/api/v3/vm/{vm}/disk/8", headers=headers)
        assert disk.status_code == 401
    mine = {"X-AUTH-TOKEN": token}
    assert (await api.client.put(f"/api/v3/vm/{vm}", json={"lifetime": 2}, headers=mine)).status_code == 200
    assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=mine)).status_code == 200


async def test_an_admin_token_may_change_and_return_any_vm(api: ApiEnv) -> None:
    token = await new_token(api)
    taken = await api.client.post("/api/v3/vm/pool1", headers={"X-AUTH-TOKEN": token})
    vm = body(taken)["pool1"]["hostname"].split(".")[0]
    await api.project()
    admin = {"X-AUTH-TOKEN": await new_token(api, basic("root", "toor"))}
    put = await api.client.put(f"/api/v3/vm/{vm}", json={"lifetime": 3}, headers=admin)
    assert (put.status_code, body(put)) == (200, {"ok": True})
    assert (await api.client.post(f"/api/v3/vm/{vm}/snapshot", headers=admin)).status_code == 202
    assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=admin)).status_code == 200


async def test_anonymous_checkout_still_works_with_auth_on(api: ApiEnv) -> None:
    taken = await api.client.post("/api/v3/vm/pool1")
    assert taken.status_code == 200
    vm = body(taken)["pool1"]["hostname"].split(".")[0]
    await api.project()
    assert body(await api.client.get(f"/api/v3/vm/{vm}"))[vm]["lifetime"] == 6
    assert (await api.client.put(f"/api/v3/vm/{vm}", json={"tags": {"a": "b"}})).status_code == 200
    assert (await api.client.put(f"/api/v3/vm/{vm}", json={"lifetime": 2})).status_code == 401
    assert (await api.client.delete(f"/api/v3/vm/{vm}")).status_code == 200  # no token: anyone may return it


async def test_dummy_auth_needs_vmpooler_debug(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.raises(ConfigError, match="VMPOOLER_DEBUG"):
            Service(AUTH, RedisHandle(client, redis_url))
        debug = parse_settings({"pools": POOLS, "auth": {"provider": "dummy"}}, env={"VMPOOLER_DEBUG": "1"})
        assert Service(debug, RedisHandle(client, redis_url)).settings.config.debug
    finally:
        await client.aclose()
