"""The experimental configuration endpoints: pool size / template / clone-target overrides, their
undo, and pool reset (reference §1.2 "Configuration endpoints", §2.4, spec behaviours 22-25, 27)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

import events as ev
from commands.manager import Manager
from commands.pool import Meta
from commands.pool_config import startup_plan
from commands.settings import Settings
from events.fold import fold
from tests.integration._api import ApiEnv, api_env, body, make_settings
from vmpooler.wiring import pool_settings

Env = Callable[..., AbstractAsyncContextManager[ApiEnv]]

POOLS = [
    {"name": "pool1", "template": "templates/one", "size": 5, "alias": ["poolone"], "clone_target": "c1"},
    {"name": "pool2", "template": "templates/two", "size": 1},
]
SETTINGS = make_settings(POOLS, config={"experimental_features": True})
OFF = make_settings(POOLS)
STARTUP = Meta("manager:test", "startup")


@pytest.fixture
def env(redis: aioredis.Redis, redis_url: str, prefix: str) -> Env:
    return lambda settings=SETTINGS: api_env(redis, redis_url, prefix, settings)


async def started(api: ApiEnv) -> None:
    """What the manager does at startup: record the YAML's settings (and request the clones)."""
    for pool, wanted in pool_settings(api.settings).items():
        await api.commands.configure(pool, wanted, STARTUP)


async def overrides(api: ApiEnv, pool: str) -> list[ev.Recorded]:
    return [
        r for r in await api.events(pool) if r.type in ("pool.configured", "pool.reset") and r.actor == "api"
    ]


async def cfg(api: ApiEnv, pool: str, field: str) -> str:
    raw = await api.redis.hget(api.keys.config(pool), field)
    assert isinstance(raw, bytes)
    return raw.decode()


async def post(api: ApiEnv, path: str, payload: Any) -> tuple[int, Any]:
    response = await api.client.post(f"/api/v3/{path}", json=payload)
    return response.status_code, body(response)


async def post_raw(api: ApiEnv, path: str, raw: bytes) -> tuple[int, Any]:
    response = await api.client.post(f"/api/v3/{path}", content=raw)
    return response.status_code, body(response)


async def delete(api: ApiEnv, path: str) -> tuple[int, Any]:
    response = await api.client.delete(f"/api/v3/{path}")
    return response.status_code, body(response)


ENDPOINTS = [
    ("POST", "config/poolsize", {"pool1": "2"}),
    ("POST", "config/pooltemplate", {"pool1": "templates/new"}),
    ("POST", "config/clonetarget", {"pool1": "c2"}),
    ("POST", "poolreset", {"pool1": "1"}),
    ("DELETE", "config/poolsize/pool1", None),
    ("DELETE", "config/pooltemplate/pool1", None),
]


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
async def test_experimental_off_is_405(env: Env, method: str, path: str, payload: Any) -> None:
    async with env(OFF) as api:
        await started(api)
        before = await api.snapshot()
        response = await call_with(api, method, path, payload, {})
        assert (response.status_code, body(response)) == (405, {"ok": False})
        assert await api.snapshot() == before


AUTH = make_settings(POOLS, config={"experimental_features": True}, auth={"provider": "dummy"})
OFF_WITH_AUTH = make_settings(POOLS, auth={"provider": "dummy"})


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
async def test_with_auth_a_token_is_required_after_the_gate(
    env: Env, method: str, path: str, payload: Any
) -> None:
    async with env(OFF_WITH_AUTH) as api:  # the 405 comes first, token or not
        assert (await call_with(api, method, path, payload, {})).status_code == 405
    async with env(AUTH) as api:
        await started(api)
        before = await api.snapshot()
        for headers in ({}, {"X-AUTH-TOKEN": "not-a-token"}):
            refused = await call_with(api, method, path, payload, headers)
            assert (refused.status_code, body(refused)) == (401, {"ok": False})
        assert await api.snapshot() == before
        basic = {"Authorization": "Basic " + base64.b64encode(b"ops:secret").decode()}
        token = body(await api.client.post("/api/v3/token", headers=basic))["token"]
        allowed = await call_with(api, method, path, payload, {"X-AUTH-TOKEN": token})
        assert allowed.status_code in (200, 201), allowed.text


async def call_with(api: ApiEnv, method: str, path: str, payload: Any, headers: dict[str, str]) -> Any:
    if method == "POST":
        return await api.client.post(f"/api/v3/{path}", json=payload, headers=headers)
    return await api.client.delete(f"/api/v3/{path}", headers=headers)


async def test_poolsize(env: Env) -> None:
    async with env() as api:
        await started(api)
        assert await post(api, "config/poolsize", {"pool1": "2"}) == (201, {"ok": True})
        assert await cfg(api, "pool1", "size") == "2"
        [event] = await overrides(api, "pool1")
        assert isinstance(event.event, ev.PoolConfigured)
        assert (event.event.source, event.event.size, event.event.template) == ("api", 2, "templates/one")
        assert event.correlation_id
        assert await post(api, "config/poolsize", {"pool1": 2}) == (200, {"ok": True})
        assert await post(api, "config/poolsize", {"pool1": "2", "pool2": "3"}) == (201, {"ok": True})
        assert await cfg(api, "pool2", "size") == "3"
        assert len(await overrides(api, "pool1")) == 1
        # An alias names its pools (vmpooler crashes on it).
        assert await post(api, "config/poolsize", {"poolone": "4"}) == (201, {"ok": True})
        assert await cfg(api, "pool1", "size") == "4"


async def test_poolsize_shrink_trims_ready(env: Env) -> None:
    async with env() as api:
        await api.seed("pool1", 3, template="templates/one")
        assert await post(api, "config/poolsize", {"pool1": "1"}) == (201, {"ok": True})
        assert len(await api.in_state("pool1", "ready")) == 1


@pytest.mark.parametrize(
    ("payload", "invalid"),
    [
        ({"nope": "1"}, ["nope"]),
        ({"pool1": "four"}, ["pool1"]),
        ({"pool1": "-1"}, ["pool1"]),
        ({"pool1": "2", "pool2": "1.5"}, ["pool2"]),
        ({"nope": "x"}, ["nope", "nope"]),
    ],
)
async def test_poolsize_invalid(env: Env, payload: dict[str, str], invalid: list[str]) -> None:
    async with env() as api:
        await started(api)
        before = await api.snapshot()
        assert await post(api, "config/poolsize", payload) == (400, {"ok": False, "not_configured": invalid})
        assert await api.snapshot() == before


async def test_poolsize_undo(env: Env) -> None:
    async with env() as api:
        await started(api)
        assert await post(api, "config/poolsize", {"pool1": "2"}) == (201, {"ok": True})
        assert await delete(api, "config/poolsize/pool1") == (
            201,
            {"ok": True, "pool_size_before_reset": 2, "pool_size_before_overrides": 5},
        )
        assert await cfg(api, "pool1", "size") == "5"
        assert [
            e.event.size for e in await overrides(api, "pool1") if isinstance(e.event, ev.PoolConfigured)
        ] == [2, 5]
        assert await delete(api, "config/poolsize/pool1") == (
            200,
            {"ok": True, "pool_size_before_reset": 5, "pool_size_before_overrides": 5},
        )
        before = await api.snapshot()
        assert await delete(api, "config/poolsize/nope") == (404, {"ok": False})
        assert await api.snapshot() == before


async def test_pooltemplate_drains_and_refills(env: Env) -> None:
    async with env() as api:
        ready = await api.seed("pool1", 2, template="templates/one")
        assert await post(api, "config/pooltemplate", {"pool1": "templates/new"}) == (201, {"ok": True})
        assert await cfg(api, "pool1", "template") == "templates/new"
        assert [r.type for r in await overrides(api, "pool1")] == ["pool.configured", "pool.reset"]
        assert await api.in_state("pool1", "ready") == []
        assert not set(ready) & set(await api.in_state("pool1", "cloning"))
        assert len(await api.in_state("pool1", "cloning")) == 2
        assert await post(api, "config/pooltemplate", {"pool1": "templates/new"}) == (200, {"ok": True})
        assert len(await overrides(api, "pool1")) == 2


@pytest.mark.parametrize(
    ("payload", "invalid"),
    [
        ({"nope": "a/b"}, ["nope"]),
        ({"pool1": "noslash"}, ["pool1"]),
        ({"pool1": "/lead/x"}, ["pool1"]),
        ({"pool1": "trail/"}, ["pool1"]),
    ],
)
async def test_pooltemplate_invalid(env: Env, payload: dict[str, str], invalid: list[str]) -> None:
    async with env() as api:
        await started(api)
        before = await api.snapshot()
        assert await post(api, "config/pooltemplate", payload) == (
            400,
            {"ok": False, "bad_templates": invalid},
        )
        assert await api.snapshot() == before


async def test_pooltemplate_undo(env: Env) -> None:
    async with env() as api:
        await started(api)
        assert await post(api, "config/pooltemplate", {"pool1": "templates/new"}) == (201, {"ok": True})
        assert await delete(api, "config/pooltemplate/pool1") == (
            201,
            {
                "ok": True,
                "template_before_reset": "templates/new",
                "template_before_overrides": "templates/one",
            },
        )
        assert await cfg(api, "pool1", "template") == "templates/one"
        assert await delete(api, "config/pooltemplate/pool1") == (
            200,
            {
                "ok": True,
                "template_before_reset": "templates/one",
                "template_before_overrides": "templates/one",
            },
        )
        assert await delete(api, "config/pooltemplate/nope") == (404, {"ok": False})


async def test_clonetarget(env: Env) -> None:
    async with env() as api:
        await api.seed("pool1", 1, template="templates/one")
        assert await post(api, "config/clonetarget", {"pool1": "c2"}) == (201, {"ok": True})
        assert await cfg(api, "pool1", "clone_target") == "c2"
        assert [r.type for r in await overrides(api, "pool1")] == ["pool.configured", "pool.reset"]
        assert await api.in_state("pool1", "ready") == []
        assert await post(api, "config/clonetarget", {"pool1": "c2"}) == (200, {"ok": True})
        before = await api.snapshot()
        assert await post(api, "config/clonetarget", {"nope": "c2"}) == (
            400,
            {"ok": False, "bad_templates": ["nope"]},
        )
        assert await api.snapshot() == before


async def test_poolreset(env: Env) -> None:
    async with env() as api:
        ready = await api.seed("pool1", 2, template="templates/one")
        assert await post(api, "poolreset", {"poolone": "1"}) == (201, {"ok": True})
        assert [r.type for r in await overrides(api, "pool1")] == ["pool.reset"]
        assert await api.in_state("pool1", "ready") == []
        assert not set(ready) & set(await api.in_state("pool1", "cloning"))
        before = await api.snapshot()
        assert await post(api, "poolreset", {"nope": "1", "pool1": "1"}) == (
            400,
            {"ok": False, "bad_pools": ["nope"]},
        )
        assert await api.snapshot() == before


@pytest.mark.parametrize(
    "path", ["config/poolsize", "config/pooltemplate", "config/clonetarget", "poolreset"]
)
async def test_bad_json(env: Env, path: str) -> None:
    async with env() as api:
        await started(api)
        before = await api.snapshot()
        assert await post_raw(api, path, b"{nope") == (
            400,
            {"ok": False, "message": "JSON payload could not be parsed"},
        )
        assert await post_raw(api, path, b"null") == (404, {"ok": False})
        assert await api.snapshot() == before


def manager(api: ApiEnv, settings: Settings) -> Manager:
    def no_targets(pool: str) -> Any:
        raise AssertionError(pool)  # startup configure never asks the provider

    return Manager(api.commands, api.keys, pool_settings(settings), no_targets, holder="test")


async def test_overrides_survive_a_manager_restart(env: Env) -> None:
    async with env() as api:
        await manager(api, api.settings).configure()
        assert await post(api, "config/poolsize", {"pool1": "2"}) == (201, {"ok": True})
        assert await post(api, "config/pooltemplate", {"pool1": "templates/new"}) == (201, {"ok": True})
        logged = len(await api.events("pool1"))
        await manager(api, api.settings).configure()  # same YAML: every override stands, nothing logged
        assert (await cfg(api, "pool1", "size"), await cfg(api, "pool1", "template")) == (
            "2",
            "templates/new",
        )
        assert len(await api.events("pool1")) == logged
        # The YAML's template changes: applied; the size it still gives as before keeps its override.
        changed = make_settings([{**POOLS[0], "template": "templates/yaml2"}, POOLS[1]])
        await manager(api, changed).configure()
        assert (await cfg(api, "pool1", "size"), await cfg(api, "pool1", "template")) == (
            "2",
            "templates/yaml2",
        )
        tail = [
            r.event for r in (await api.events("pool1"))[logged:] if isinstance(r.event, ev.PoolConfigured)
        ]
        assert [(e.source, e.size, e.template) for e in tail] == [
            ("config", 5, "templates/yaml2"),
            ("api", 2, "templates/yaml2"),
        ]
        # The decision state still equals the fold of the log.
        live = cast("dict[bytes, bytes]", await api.redis.hgetall(api.keys.config("pool1")))
        assert fold(await api.events("pool1")).cfg == {k.decode(): v.decode() for k, v in live.items()}
        # An undo goes back to the YAML's current value, and the next restart keeps it.
        assert await delete(api, "config/poolsize/pool1") == (
            201,
            {"ok": True, "pool_size_before_reset": 2, "pool_size_before_overrides": 5},
        )
        await manager(api, changed).configure()
        assert await cfg(api, "pool1", "size") == "5"


def test_startup_plan_without_history_applies_the_yaml() -> None:
    wanted = pool_settings(SETTINGS)["pool1"]
    assert startup_plan(wanted, None, None) == [wanted]
    assert startup_plan(wanted, wanted, wanted) == [wanted]
