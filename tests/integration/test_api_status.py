"""Status and configuration reads (``/status``, ``/poolstat``, ``/totalrunning``, ``/config``),
``/healthcheck``, the non-API routes, the OpenAPI document, and the daily statistics projection
(reference §1.2 and spec behaviours 18-21, 26, 32, 34)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

import events as ev
from commands.pool import Meta
from projectors.daily_stats import day_key, day_of
from projectors.read_stats import StatsReader
from tests.integration._api import T0, ApiEnv, api_env, body, make_settings

Env = Callable[..., AbstractAsyncContextManager[ApiEnv]]

POOLS = [
    {
        "name": "pool1",
        "template": "templates/one",
        "size": 2,
        "alias": ["poolone", "one"],
        "dns_plugin": "example",
        "folder": "vms/pool1",
        "password": "hunter2",
        "pwd": "hunter3",
        "ssh_key": "-----BEGIN hunter4",
        "access_key": "hunter5",
        "clone_extra_config": {"guestinfo.password": "hunter6", "guestinfo.hostname": "x"},
    },
    {"name": "pool2", "size": 1, "alias": "pooltwo"},
    {"name": "pool3", "size": 0},
    {"name": "pool4", "size": 2, "clone_target": "cluster-b"},
]
SETTINGS = make_settings(POOLS)
ALL = ["boot", "capacity", "clone", "pools", "queue", "status"]


@pytest.fixture
def env(redis: aioredis.Redis, redis_url: str, prefix: str) -> Env:
    return lambda settings=SETTINGS, **kw: api_env(redis, redis_url, prefix, settings, **kw)


async def populate(api: ApiEnv) -> dict[str, Any]:
    """pool1: size 3 in its log (2 in the YAML), 1 ready, 1 running, 1 booting, 1 cloning;
    pool2: 1 cloning; pool3: size 0; pool4: no event yet."""
    ready = await api.seed(
        "pool1",
        2,
        size=3,
        booting=1,
        template="templates/override",
        clone_seconds=[10, 20, 30],
        boot_seconds=[5, 7],
    )
    last_ready_at = api.clock.now
    await api.seed("pool2", 0, size=1)
    await api.seed("pool3", 0)
    checkout = await api.client.post("/api/v3/vm/pool1")
    assert checkout.status_code == 200
    await api.project()
    return {"ready": ready, "last_ready_at": last_ready_at}


def ruby_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


async def test_status_full(env: Env) -> None:
    async with env() as api:
        seeded = await populate(api)
        response = await api.client.get("/api/v3/status")
        assert response.status_code == 200
        data = body(response)
        assert list(data) == ALL
        assert data["pools"] == {
            "pool1": {
                "ready": 1,
                "running": 1,
                "pending": 2,
                "max": 3,
                "lastBoot": ruby_time(seeded["last_ready_at"]),
                "alias": ["poolone", "one"],
            },
            "pool2": {"ready": 0, "running": 0, "pending": 1, "max": 1, "lastBoot": "", "alias": "pooltwo"},
            "pool3": {"ready": 0, "running": 0, "pending": 0, "max": 0, "lastBoot": ""},
            "pool4": {"ready": 0, "running": 0, "pending": 0, "max": 2, "lastBoot": ""},
        }
        assert data["status"] == {
            "ok": False,
            "message": "Found 2 empty pools.",
            "empty": ["pool2", "pool4"],
            "uptime": data["status"]["uptime"],
        }
        assert data["status"]["uptime"] == round((api.clock.now - (T0 - 12_345)) / 1000, 1)
        assert data["capacity"] == {"current": 1, "total": 6, "percent": 16.7}
        assert data["queue"] == {
            "requested": 0,
            "pending": 3,
            "cloning": 2,
            "booting": 1,
            "ready": 1,
            "running": 1,
            "completed": 0,
            "total": 5,
        }
        assert data["clone"] == {
            "duration": {"average": 20.0, "min": 10.0, "max": 30.0, "total": 60.0},
            "count": {"total": 3},
        }
        assert data["boot"] == {
            "duration": {"average": 6.0, "min": 5.0, "max": 7.0, "total": 12.0},
            "count": {"total": 2},
        }


async def test_status_returned_vm_counts_as_completed(env: Env) -> None:
    async with env() as api:
        await populate(api)
        [running] = await api.in_state("pool1", "running")
        assert (await api.client.delete(f"/api/v3/vm/{running}")).status_code == 200
        await api.project()
        queue = body(await api.client.get("/api/v3/status?view=queue"))["queue"]
        assert (queue["running"], queue["completed"], queue["total"]) == (0, 1, 5)


async def test_status_without_pools_or_stats_is_fully_armed_and_zeroed(env: Env) -> None:
    async with env(make_settings([{"name": "solo", "size": 0}])) as api:
        data = body(await api.client.get("/api/v3/status"))
        assert data["status"]["ok"] is True
        assert data["status"]["message"] == "Battle station fully armed and operational."
        assert data["capacity"] == {"current": 0, "total": 0, "percent": 0}
        zero = {"duration": {"average": 0, "min": 0, "max": 0, "total": 0}, "count": {"total": 0}}
        assert data["clone"] == data["boot"] == zero


@pytest.mark.parametrize(
    ("query", "sections"),
    [
        ("", ALL),
        ("?view", ALL),
        ("?view=", ["status"]),
        ("?view=capacity", ["capacity", "status"]),
        ("?view=pools,queue", ["pools", "queue", "status"]),
        ("?view=clone,boot,bogus", ["boot", "clone", "status"]),
        ("?view=%FF%00,status", ["status"]),
    ],
)
async def test_status_views(env: Env, query: str, sections: list[str]) -> None:
    async with env() as api:
        await populate(api)
        response = await api.client.get(f"/api/v3/status{query}")
        assert response.status_code == 200
        data = body(response)
        assert list(data) == sections
        # The empty-pool verdict needs the pools section, as in vmpooler.
        assert data["status"]["ok"] is ("pools" not in sections)


@pytest.mark.parametrize(
    ("query", "pools"),
    [
        ("", {}),
        ("?pool", {}),
        ("?pool=", {}),
        ("?pool=nosuch", {}),
        ("?pool=pool1", {"pool1": {"max": 3, "alias": ["poolone", "one"], "ready": 1}}),
        ("?pool=pooltwo", {"pool2": {"max": 1, "alias": "pooltwo", "ready": 0}}),
        (
            "?pool=pool4,one",
            {"pool1": {"max": 3, "alias": ["poolone", "one"], "ready": 1}, "pool4": {"max": 2, "ready": 0}},
        ),
    ],
)
async def test_poolstat(env: Env, query: str, pools: dict[str, Any]) -> None:
    async with env() as api:
        await populate(api)
        response = await api.client.get(f"/api/v3/poolstat{query}")
        assert (response.status_code, body(response)) == (200, {"pools": pools})


async def test_totalrunning(env: Env) -> None:
    async with env() as api:
        assert body(await api.client.get("/api/v3/totalrunning")) == {"running": 0}
        await populate(api)
        assert body(await api.client.get("/api/v3/totalrunning")) == {"running": 1}


async def test_config_shows_effective_pools_without_secrets(env: Env) -> None:
    async with env() as api:
        await populate(api)
        response = await api.client.get("/api/v3/config")
        assert response.status_code == 200
        data = body(response)
        assert list(data) == ["pool_configuration", "status"]
        assert data["status"] == {"ok": True}
        pool1, pool2, _, pool4 = data["pool_configuration"]
        assert pool1 == {
            "name": "pool1",
            "alias": ["poolone", "one"],
            "template": "templates/override",
            "size": 3,
            "provider": "dummy",
            "dns_plugin": "example",
            "timeout": 15,
            "ready_ttl": 60,
            "folder": "vms/pool1",
            "template_ready": True,
        }
        assert "hunter" not in response.text  # nothing that is not known to be safe, at any depth
        assert (pool2["alias"], pool2["size"]) == ("pooltwo", 1)
        assert (pool4["size"], pool4["clone_target"], pool4["template_ready"]) == (2, "cluster-b", True)


async def test_config_without_pools_is_404(env: Env) -> None:
    async with env(make_settings([])) as api:
        response = await api.client.get("/api/v3/config")
        assert (response.status_code, body(response)) == (404, {"ok": False})


async def test_healthcheck_and_redis_outage(env: Env) -> None:
    async with env() as api:
        for pool in SETTINGS.pool_names:  # a live manager holds every pool
            await api.redis.set(api.keys.lease(pool, "manager"), "m1", px=15_000)
        response = await api.client.get("/healthcheck")  # vmpooler's {"ok": true}, plus details
        assert (response.status_code, body(response)["ok"]) == (200, True)
    async with env(app_redis_url="redis://127.0.0.1:1/0") as down:
        response = await down.client.get("/healthcheck")
        assert (response.status_code, body(response)) == (503, {"ok": False, "redis": False})
        response = await down.client.get("/api/v3/status")
        assert (response.status_code, body(response)) == (503, {"ok": False})


async def test_non_api_routes(env: Env) -> None:
    async with env() as api:
        root = await api.client.get("/", follow_redirects=False)
        assert (root.status_code, root.headers["location"]) == (302, "/dashboard/")
        for path in ("/nope", "/api/v3", "/api/v3/vm/a/b", "/api/v2/vm"):
            response = await api.client.get(path)
            assert (response.status_code, body(response)) == (404, {"ok": False}), path
        wrong = await api.client.delete("/api/v3/status")
        assert (wrong.status_code, body(wrong)) == (405, {"ok": False})
        assert "GET" in wrong.headers.get("allow", "")


async def test_openapi_documents_the_routes(env: Env) -> None:
    async with env() as api:
        response = await api.client.get("/schema/openapi.json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        vm = paths["/api/v3/vm/{hostname}"]
        assert set(vm) == {"get", "put", "delete", "post"}
        assert vm["delete"]["summary"] == "Return a checked-out VM"
        assert {"200", "400", "404", "503"} <= set(paths["/api/v3/vm"]["post"]["responses"])
        for path in (
            "/api/v3/status",
            "/api/v3/poolstat",
            "/api/v3/totalrunning",
            "/api/v3/config",
            "/healthcheck",
        ):
            assert paths[path]["get"]["summary"], path


async def test_daily_stats_split_by_utc_day_and_rebuild_identically(env: Env) -> None:
    async with env() as api:
        await api.seed("pool1", 1, clone_seconds=[12.5], boot_seconds=[30.25])
        first_day = day_of(api.clock.now)
        api.clock.advance(hours=24)
        await api.seed("pool2", 2, clone_seconds=[4, 6], boot_seconds=[8, 2])
        second_day = day_of(api.clock.now)
        reader = StatsReader(api.redis, api.keys)
        days = await reader.days(["pool1", "pool2"], [first_day, second_day])
        one, two = days[first_day]["pool1"], days[second_day]["pool2"]
        assert (one.clone.count, one.clone.total, one.boot.min, one.boot.max) == (1, 12.5, 30.25, 30.25)
        assert (two.clone.count, two.clone.total, two.boot.min, two.boot.max) == (2, 10.0, 2.0, 8.0)
        assert days[second_day]["pool1"].clone.count == days[first_day]["pool2"].boot.count == 0
        keys = [day_key(api.keys, "pool1", first_day), day_key(api.keys, "pool2", second_day)]
        live = [await api.redis.get(k) for k in keys]
        await api.runner.rebuild()
        assert [await api.redis.get(k) for k in keys] == live
        # status shows the day of the API's clock
        assert body(await api.client.get("/api/v3/status?view=boot"))["boot"]["count"] == {"total": 2}


async def test_status_lastboot_and_vm_detail_survive_unknown_events(env: Env) -> None:
    async with env() as api:
        [vm] = await api.seed("pool1", 1)
        await api.commands.append("pool1", [(vm, ev.VmTagged(tags={"a": "b"}))], Meta("test"))
        await api.project()
        pools = body(await api.client.get("/api/v3/status?view=pools"))["pools"]
        assert pools["pool1"]["lastBoot"] == ruby_time(api.clock.now)
