"""The write gate (``web._access``): every field of a VM and every task is its owner's (or an
admin's), pool control is the admins' when ``:auth: admins`` is set, every API-made event names
its user, and refused attempts are recorded, at most one per requester, target and minute."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from commands.checkout import Requester, RequestMeta
from commands.pool import PoolCommands
from events import CONTROL, VmSnapshotTaken
from tests.integration._api import ApiEnv, api_env, body, make_settings
from vmpooler.wiring import pool_settings
from web._access import REFUSAL_WINDOW_MS

POOLS = [{"name": "pool1", "size": 3}]
CONFIG = {"experimental_features": True}
AUTH = make_settings(POOLS, auth={"provider": "dummy", "admins": "root"}, config=CONFIG)
OPEN_AUTH = make_settings(POOLS, auth={"provider": "dummy"}, config=CONFIG)


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:pw-{user}".encode()).decode()}


async def token_of(api: ApiEnv, user: str) -> dict[str, str]:
    response = await api.client.post("/api/v3/token", headers=basic(user))
    return {"X-AUTH-TOKEN": body(response)["token"]}


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, AUTH) as env:
        for pool, wanted in pool_settings(env.settings).items():
            await env.commands.configure(pool, wanted, RequestMeta(Requester()))
        await env.seed("pool1", 3)
        yield env


async def checked_out(api: ApiEnv, headers: dict[str, str]) -> str:
    got = await api.client.post("/api/v3/vm/pool1", headers=headers)
    assert got.status_code == 200, got.text
    await api.project()
    vm = body(got)["pool1"]["hostname"]
    assert isinstance(vm, str)
    return vm


async def test_no_field_of_a_tokens_vm_changes_without_its_token(api: ApiEnv) -> None:
    alice, bob, root = await token_of(api, "alice"), await token_of(api, "bob"), await token_of(api, "root")
    vm = await checked_out(api, alice)
    tags = {"tags": {"project": "x"}}
    for headers in ({}, bob, {"X-AUTH-TOKEN": "made-up"}):
        for payload in (tags, {"lifetime": 2}, {"tags": {"a": "b"}, "lifetime": 2}):
            refused = await api.client.put(f"/api/v3/vm/{vm}", json=payload, headers=headers)
            assert (refused.status_code, body(refused)) == (401, {"ok": False}), (headers, payload)
        for path in (f"{vm}/disk/8", f"{vm}/snapshot"):
            assert (await api.client.post(f"/api/v3/vm/{path}", headers=headers)).status_code == 401
        assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=headers)).status_code == 401
    changed = [r.type for r in await api.events("pool1") if r.vm == vm and r.type.startswith("vm.")]
    assert changed[changed.index("vm.checked-out") + 1 :] == ["vm.refused"] * len(
        changed[changed.index("vm.checked-out") + 1 :]
    )
    # the owner and an admin may
    assert (await api.client.put(f"/api/v3/vm/{vm}", json=tags, headers=alice)).status_code == 200
    assert (await api.client.put(f"/api/v3/vm/{vm}", json={"lifetime": 3}, headers=root)).status_code == 200


async def test_every_api_event_names_its_user(api: ApiEnv) -> None:
    alice = await token_of(api, "alice")
    vm = await checked_out(api, alice)
    await api.client.put(f"/api/v3/vm/{vm}", json={"tags": {"a": "b"}, "lifetime": 3}, headers=alice)
    await api.client.post(f"/api/v3/vm/{vm}/disk/8", headers=alice)
    snap = body(await api.client.post(f"/api/v3/vm/{vm}/snapshot", headers=alice))[vm]["snapshot"]
    # a snapshot must be taken before it can be reverted to: record it as the worker would
    await api.commands.append("pool1", [(vm, VmSnapshotTaken(name=snap))], RequestMeta(Requester()))
    await api.project()
    assert (await api.client.post(f"/api/v3/vm/{vm}/snapshot/{snap}", headers=alice)).status_code == 202
    assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=alice)).status_code == 200
    root = await token_of(api, "root")
    assert (
        await api.client.post("/api/v3/config/poolsize", json={"pool1": 1}, headers=root)
    ).status_code == 201
    assert (await api.client.post("/api/v3/poolreset", json={"pool1": 1}, headers=root)).status_code == 201
    made = {
        r.type: r.actor
        for r in await api.events("pool1")
        if r.type
        in (
            "vm.checked-out",
            "vm.tagged",
            "vm.lifetime-changed",
            "vm.disk-requested",
            "vm.snapshot-requested",
            "vm.revert-requested",
            "vm.returned",
        )
    }
    assert made == dict.fromkeys(made, "api:alice"), made
    assert len(made) == 7, made
    control = [r for r in await api.events("pool1") if r.type in ("pool.configured", "pool.reset")][-2:]
    assert [(r.type, r.actor) for r in control] == [
        ("pool.configured", "api:root"),
        ("pool.reset", "api:root"),
    ]


async def test_pool_control_is_for_admins_when_admins_are_set(api: ApiEnv) -> None:
    alice, root = await token_of(api, "alice"), await token_of(api, "root")
    before = await api.snapshot()
    calls: list[tuple[str, str, Any]] = [
        ("POST", "config/poolsize", {"pool1": 0}),
        ("POST", "config/pooltemplate", {"pool1": "templates/other"}),
        ("POST", "config/clonetarget", {"pool1": "cluster-x"}),
        ("POST", "poolreset", {"pool1": 1}),
        ("DELETE", "config/poolsize/pool1", None),
        ("DELETE", "config/pooltemplate/pool1", None),
    ]
    for method, path, payload in calls:
        refused = await api.client.request(method, f"/api/v3/{path}", json=payload, headers=alice)
        assert (refused.status_code, body(refused)) == (
            403,
            {"ok": False, "error": "only admins may change pools"},
        )
    assert await api.snapshot() == before
    # one record per requester and pool a minute: the first attempt's
    refusals = [
        (r["type"], r["action"], r["status"], r["user"], r["actor"]) for r in await api.refusals("pool1")
    ]
    assert refusals == [("pool.refused", "poolsize", 403, "alice", "api:alice")]
    allowed = await api.client.post("/api/v3/config/poolsize", json={"pool1": 2}, headers=root)
    assert allowed.status_code == 201


async def test_without_admins_any_token_controls_pools(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with api_env(redis, redis_url, prefix, OPEN_AUTH) as api:
        for pool, wanted in pool_settings(api.settings).items():
            await api.commands.configure(pool, wanted, RequestMeta(Requester()))
        alice = await token_of(api, "alice")
        assert (
            await api.client.post("/api/v3/config/poolsize", json={"pool1": 1}, headers=alice)
        ).status_code == 201


async def test_refused_attempts_are_recorded_once_per_requester_target_and_minute(api: ApiEnv) -> None:
    alice, bob = await token_of(api, "alice"), await token_of(api, "bob")
    vm = await checked_out(api, alice)
    for _ in range(20):
        assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=bob)).status_code == 401
        assert (await api.client.delete(f"/api/v3/vm/{vm}")).status_code == 401
    # made-up targets are never recorded
    assert (await api.client.delete("/api/v3/vm/no-such-vm", headers=bob)).status_code == 404
    assert (await api.client.delete("/api/v3/ondemandvm/no-such-request", headers=bob)).status_code in (
        401,
        404,
    )
    refusals = [r for r in await api.refusals("pool1") if r["type"] == "vm.refused"]
    assert [(r["vm"], r.get("user", ""), r["action"], r["status"]) for r in refusals] == [
        (vm, "bob", "return", 401),
        (vm, "", "return", 401),
    ]
    assert refusals[1]["client"]  # anonymous attempts name their address
    assert await api.refusals(CONTROL) == []
    # the bound is a key per requester and target that expires with the window
    keys = [k async for k in api.redis.scan_iter(match=f"{api.keys.prefix}:refused:*")]
    assert len(keys) == 2
    assert 0 < await api.redis.pttl(keys[0]) <= REFUSAL_WINDOW_MS
    await api.redis.delete(*keys)  # the minute is over
    assert (await api.client.delete(f"/api/v3/vm/{vm}", headers=bob)).status_code == 401
    assert len([r for r in await api.refusals("pool1") if r["type"] == "vm.refused"]) == 3


async def test_every_write_path_carries_the_requester_to_pool_commands(api: ApiEnv, monkeypatch: Any) -> None:
    seen: list[tuple[str, Requester]] = []
    for name in ("append", "checkout", "configure", "reset", "control"):
        original = getattr(PoolCommands, name)

        def spy(self: PoolCommands, *args: Any, _original: Any = original, _name: str = name) -> Any:
            meta = args[-1]
            assert isinstance(meta, RequestMeta), (_name, meta)
            seen.append((_name, meta.requester))
            return _original(self, *args)

        monkeypatch.setattr(PoolCommands, name, spy)
    alice = await token_of(api, "alice")
    vm = await checked_out(api, alice)
    await api.client.put(f"/api/v3/vm/{vm}", json={"tags": {"a": "b"}}, headers=alice)
    await api.client.delete(f"/api/v3/vm/{vm}", headers=alice)
    assert {(name, r.user) for name, r in seen} >= {("checkout", "alice"), ("append", "alice")}
