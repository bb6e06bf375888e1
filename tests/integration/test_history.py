"""The dashboard's history projection (fold, retention, rebuild equals live), its reads, and the
dashboard's JSON endpoints (vmpooler's ``/dashboard/stats/vmpooler/{pool,running}`` among them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

import events as ev
from projectors import ProjectionRunner
from projectors.history import History
from projectors.read import ReadModels
from projectors.read_history import HistoryReader
from tests.integration._api import SEED, T0, ApiEnv, api_env, body, make_settings
from web.dashboard._data import Snapshots
from web.dashboard._live import Hub, sse_stream

Env = Callable[..., AbstractAsyncContextManager[ApiEnv]]
MIN = 60_000
POOLS = [{"name": "debian-12", "size": 3}, {"name": "debian-11", "size": 1}, {"name": "centos-9", "size": 2}]
SETTINGS = make_settings(POOLS)


@pytest.fixture
def env(redis: aioredis.Redis, redis_url: str, prefix: str) -> Env:
    return lambda settings=SETTINGS, **kw: api_env(redis, redis_url, prefix, settings, **kw)


def runner(
    api: ApiEnv, history: History | None = None, batch: int = 5, name: str = "hist"
) -> ProjectionRunner:
    return ProjectionRunner(
        api.redis, api.keys, [history or History()], list(api.settings.pool_names), consumer=name, batch=batch
    )


async def checkout(api: ApiEnv, pool: str, n: int = 1) -> list[str]:
    return await api.commands.checkout(pool, n, ev.VmCheckedOut(lifetime=0), SEED)


async def dump(api: ApiEnv, pool: str) -> dict[str, Any]:
    """Every key of the pool's history read model (checkpoint aside) with its value."""
    out: dict[str, Any] = {}
    async for key in api.redis.scan_iter(match=f"{api.keys.read_model(pool, History.name)}*"):
        if key.endswith(b":checkpoint"):
            continue
        kind = await api.redis.type(key)
        out[key.decode()] = await (api.redis.hgetall(key) if kind == b"hash" else api.redis.get(key))
    return out


async def test_fold_counts_gauges_and_events_per_minute(env: Env) -> None:
    async with env() as api:
        await api.seed("debian-12", 2, size=2, clone_seconds=[10, 30], boot_seconds=[4, 6])
        api.clock.advance(seconds=5 * 60)
        await checkout(api, "debian-12")
        api.clock.advance(seconds=3 * 60)
        await runner(api).catch_up()
        series = (await HistoryReader(api.redis, api.keys).minutes(["debian-12"], api.clock.now, 10))[
            "debian-12"
        ]
        # minute -1 is in the hour before T0: no bucket there, so the opening comes from T0's bucket
        assert series.start == T0 - MIN
        assert series.ready == [0, 2, 2, 2, 2, 2, 1, 1, 1, 1]
        assert series.running == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
        assert series.checkouts == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
        assert (series.clones[1], series.clone_s[1], series.boots[1], series.boot_s[1]) == (2, 40.0, 2, 10.0)
        assert sum(series.failures) == 0
        hours = (await HistoryReader(api.redis, api.keys).hours(["debian-12"], api.clock.now, 2))["debian-12"]
        assert hours.ready == [0, 1]
        assert hours.checkouts == [0, 1]
        assert hours.clones == [0, 2]


async def test_a_refused_checkout_is_a_failure_and_its_claims_are_not_checkouts(env: Env) -> None:
    async with env() as api:
        await api.seed("centos-9", 2, size=2)
        await api.seed("debian-11", 0, size=1)
        refused = await api.client.post("/api/v3/vm", content=b'{"centos-9": "2", "debian-11": "1"}')
        assert refused.status_code == 503  # two centos VMs claimed, then handed back
        assert [r.type for r in await api.events("centos-9")].count("vm.checkout-reverted") == 2
        failed = [r.event for r in await api.events("debian-11") if r.type == "pool.checkout-failed"]
        assert failed == [ev.PoolCheckoutFailed(requested_as="debian-11", wanted=1, got=0)]
        await runner(api).catch_up()
        reader = HistoryReader(api.redis, api.keys)
        series = await reader.minutes(["centos-9", "debian-11"], api.clock.now, 1)
        centos, debian = series["centos-9"], series["debian-11"]
        assert (centos.ready, centos.running, centos.checkouts, centos.failures) == ([2], [0], [0], [0])
        assert (debian.checkouts, debian.failures) == ([0], [1])


async def test_retention_keeps_the_newest_buckets(env: Env) -> None:
    async with env() as api:
        history = History(minute_hours=2, hour_days=1)
        await api.seed("debian-12", 3, size=3)
        for hours in (1, 2, 50):  # T0+1h, T0+3h, T0+53h
            api.clock.advance(hours=hours)
            await checkout(api, "debian-12")
        await runner(api, history).catch_up()
        hour0, day0 = T0 // 3_600_000, T0 // 86_400_000
        found = {k.split(":history:", 1)[1] for k in await dump(api, "debian-12") if ":history:" in k}
        assert found == {f"m:{hour0 + 53}", f"h:{day0 + 2}", "of"}
        series = await HistoryReader(api.redis, api.keys, history).minutes(["debian-12"], api.clock.now, 3)
        # the two minutes before are in a bucket that never existed: they open the next one's way
        assert series["debian-12"].ready == [1, 1, 0]
        assert series["debian-12"].running == [2, 2, 3]


async def test_rebuild_equals_live(env: Env) -> None:
    async with env() as api:
        history = History(minute_hours=2, hour_days=2)
        live = runner(api, history, batch=2, name="live")
        await api.seed("debian-12", 3, size=3, clone_seconds=[1.1, 2.2, 3.3], boot_seconds=[0.7, 0.9, 1.3])
        await api.seed("centos-9", 2, size=2)
        for i, minutes in enumerate([0, 1, 1, 59, 200, 3000, 2]):
            api.clock.advance(seconds=minutes * 60 + 7)
            await checkout(api, "debian-12" if i % 2 else "centos-9")
            if i % 3 == 0:
                await live.catch_up()  # live folds in uneven batches
        await live.catch_up()
        before = {p: await dump(api, p) for p in ("debian-12", "centos-9")}
        assert before["debian-12"]
        assert await runner(api, history, batch=500, name="rebuild").rebuild() > 0
        assert {p: await dump(api, p) for p in ("debian-12", "centos-9")} == before


async def test_vmpooler_stats_endpoints_answer_from_history(env: Env) -> None:
    async with env() as api:
        await api.seed("debian-12", 3, size=3)
        await api.seed("debian-11", 1, size=1)
        await api.seed("centos-9", 0, size=2)
        api.clock.advance(seconds=120)
        await checkout(api, "debian-12", 2)
        await checkout(api, "debian-11")
        await api.project()
        await runner(api).catch_up()
        pool = body(await api.client.get("/dashboard/stats/vmpooler/pool"))
        assert pool == {
            "debian-12": {"size": 3, "ready": 1},
            "debian-11": {"size": 1, "ready": 0},
            "centos-9": {"size": 2, "ready": 0},
        }
        pool = body(await api.client.get("/dashboard/stats/vmpooler/pool?history=1"))
        assert len(pool["debian-12"]["history"]) == 60
        assert pool["debian-12"]["history"][-4:] == [0, 3, 3, 1]  # minutes -1, 0, 1, 2
        running = body(await api.client.get("/dashboard/stats/vmpooler/running"))
        assert running == {"debian": {"running": 3}, "centos": {"running": 0}}
        running = body(await api.client.get("/dashboard/stats/vmpooler/running?history=1"))
        assert running["debian"]["history"][-3:] == [0, 0, 3]
        assert running["centos"]["history"] == [0] * 60


async def test_dashboard_data_history_and_vm_history(env: Env) -> None:
    async with env() as api:
        await api.seed("debian-12", 2, size=3)
        [vm] = await checkout(api, "debian-12")
        await api.project()
        await runner(api).catch_up()
        page = await api.client.get("/dashboard/")
        assert page.status_code == 200
        assert "/dashboard/static/dashboard.js" in page.text
        for asset in ("dashboard.js", "dashboard.css"):
            assert (await api.client.get(f"/dashboard/static/{asset}")).status_code == 200
        assert (await api.client.get("/dashboard/static/nope.js")).status_code == 404
        data = msgspec.json.decode((await api.client.get("/dashboard/data")).content)
        assert data["pools"] == ["debian-12", "debian-11", "centos-9"]
        assert data["rows"][0] == [3, 1, 2, 0, 1, 0]  # the third clone, and the refill of the checkout
        assert data["today"]["clone"]["count"] == 2
        assert data["feed"][0]["type"] == "vm.clone-requested"
        assert data["cursor"] == data["feed"][0]["pos"]
        hist = msgspec.json.decode((await api.client.get("/dashboard/history?window=hour")).content)
        assert hist["pools"]["debian-12"][1][-1] == 1
        assert hist["checkouts"][-1] == 1
        since = msgspec.json.decode(
            (await api.client.get(f"/dashboard/history?window=day&since={api.clock.now}")).content
        )
        assert len(since["checkouts"]) == 1
        assert (await api.client.get("/dashboard/history?window=week")).status_code == 400
        detail = body(await api.client.get(f"/dashboard/vm/{vm}"))
        assert [e["type"] for e in detail["events"]] == [
            "vm.clone-requested",
            "vm.cloned",
            "vm.ready",
            "vm.checked-out",
        ]
        assert (await api.client.get("/dashboard/vm/nope")).status_code == 404
        assert (await api.client.get("/dashboard/events?since=bad")).status_code == 400


async def next_frame(stream: Any, within: float = 5.0) -> bytes:
    """The next SSE frame that is not a keep-alive or the retry hint."""
    deadline = time.monotonic() + within
    while True:
        frame: bytes = await asyncio.wait_for(anext(stream), max(0.01, deadline - time.monotonic()))
        if frame.startswith(b"id: ") or frame.startswith(b"event: "):
            return frame


async def test_sse_resumes_after_the_last_event_id_then_goes_live(env: Env) -> None:
    async with env() as api:
        await api.seed("debian-12", 2, size=2)
        await api.project()
        [old_last] = [r.position for r in (await api.events("debian-12"))[-1:]]
        [vm] = await checkout(api, "debian-12")  # missed while "disconnected"
        await api.project()
        snapshots = Snapshots(
            api.redis,
            api.keys,
            ReadModels(api.redis, api.keys),
            list(api.settings.pool_names),
            {"debian-12": 2},
        )
        hub = Hub(api.redis, api.keys, snapshots, block_ms=200)
        stream = sse_stream(hub, old_last, keepalive_s=0.2)
        try:
            frame = await next_frame(stream)
            head, _, payload = frame.partition(b"data: ")
            message = msgspec.json.decode(payload)
            assert next((e["vm"], e["type"]) for e in message["events"]) == (vm, "vm.checked-out")
            assert message["rows"]["debian-12"][4] == 1
            assert head.startswith(f"id: {message['events'][-1]['pos']}\n".encode())
            [second] = await checkout(api, "debian-12")
            await api.project()
            frame = await next_frame(stream)
            message = msgspec.json.decode(frame.partition(b"data: ")[2])
            assert (message["events"][0]["vm"], message["events"][0]["type"]) == (second, "vm.checked-out")
            assert message["rows"]["debian-12"][4] == 2
        finally:
            await stream.aclose()
            await hub.stop()


async def test_the_service_registers_the_history_with_its_retention(
    redis: aioredis.Redis, redis_url: str
) -> None:
    from commands.settings import ConfigError
    from vmpooler.config import parse_settings
    from vmpooler.redis_client import RedisHandle
    from vmpooler.wiring import Service, history_projection

    service = Service(SETTINGS, RedisHandle(redis, redis_url))
    history = [p for p in service.projections().projections if isinstance(p, History)]
    assert [(h.minute.keep, h.hour.keep) for h in history] == [(25, 30)]
    doc = {
        "pools": [{"name": "p", "template": "t/p", "size": 1}],
        "config": {"history_minute_hours": 48, "history_hour_days": 7},
    }
    custom = history_projection(parse_settings(doc, env={}))
    assert (custom.minute.keep, custom.hour.keep) == (48, 7)
    doc["config"] = {"history_hour_days": 0}
    with pytest.raises(ConfigError, match="history_hour_days"):
        parse_settings(doc, env={})


async def test_a_stream_too_far_behind_is_told_to_resync(env: Env) -> None:
    async with env() as api:
        await api.seed("debian-12", 3, size=3)  # 10 events in one log
        await api.project()
        pools = ["debian-12", *(f"other-{i}" for i in range(499))]  # 500 pools: 8 events each at most
        snapshots = Snapshots(api.redis, api.keys, ReadModels(api.redis, api.keys), pools, {})
        hub = Hub(api.redis, api.keys, snapshots, block_ms=100, queue_max=2)
        stream = sse_stream(hub, "0-0", keepalive_s=0.2)
        try:
            assert await next_frame(stream) == b"event: resync\ndata: {}\n\n"
            queue = hub.subscribe()
            for i in range(3):  # one more than the queue holds: it is emptied and told to resync
                hub._publish((f"{i}-0", b"{}"))
            assert queue.get_nowait() is None
            assert queue.empty()
        finally:
            await stream.aclose()
            await hub.stop()
