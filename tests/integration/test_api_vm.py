"""``/api/v3/vm``: checkout (JSON and URL forms), show, update and return VMs, as vmpooler answers
(reference §1.2 and spec behaviours 1-13)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

import events as ev
from commands.checkout import CheckoutService
from commands.errors import QuotaError
from commands.pool import Meta, PoolCommands
from commands.settings import Settings
from events import Keys
from tests.integration._api import DOMAIN, ApiEnv, api_env, body, make_settings

Env = Callable[[Settings], AbstractAsyncContextManager[ApiEnv]]

POOLS = [
    {
        "name": "pool1",
        "template": "templates/pool1",
        "size": 1,
        "dns_plugin": "example",
        "alias": ["poolone"],
    },
    {"name": "pool2", "size": 1, "dns_plugin": "example"},
    {"name": "pool3", "size": 1, "alias": "poolthree"},
]
SETTINGS = make_settings(POOLS)


@pytest.fixture
def env(redis: aioredis.Redis, redis_url: str, prefix: str) -> Env:
    return lambda settings: api_env(redis, redis_url, prefix, settings)


def fqdn(vm: str) -> str:
    return f"{vm}.{DOMAIN}"


async def test_lists_pool_names_without_aliases(env: Env) -> None:
    async with env(SETTINGS) as api:
        response = await api.client.get("/api/v3/vm")
        assert response.status_code == 200
        assert body(response) == ["pool1", "pool2", "pool3"]


async def test_checkout_one_vm_answers_its_fqdn_and_marks_it_running(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        response = await api.client.post("/api/v3/vm", content=b'{"pool1":"1"}')
        assert response.status_code == 200
        assert response.text == f'{{\n  "ok": true,\n  "pool1": {{\n    "hostname": "{fqdn(vm)}"\n  }}\n}}'
        assert await api.state("pool1", vm) == "running"


async def test_checkout_by_alias_is_keyed_by_the_alias(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        response = await api.client.post("/api/v3/vm", json={"poolone": 1})
        assert (response.status_code, body(response)) == (
            200,
            {"ok": True, "poolone": {"hostname": fqdn(vm)}},
        )


async def test_pool_without_domain_gives_short_names(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool3", 1)
        response = await api.client.post("/api/v3/vm/poolthree")
        assert body(response) == {"ok": True, "poolthree": {"hostname": vm}}


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/api/v3/vm", b'{"nosuchpool":"1"}'),
        ("POST", "/api/v3/vm", b'{"pool1":"1","nosuchpool":"1"}'),
        ("POST", "/api/v3/vm", b"{}"),
        ("POST", "/api/v3/vm", b""),
        ("POST", "/api/v3/vm/nosuchpool", b""),
        ("POST", "/api/v3/vm/pool1+nosuch.pool", b""),
    ],
)
async def test_unknown_or_missing_pool_is_404_and_takes_nothing(
    env: Env, method: str, path: str, content: bytes
) -> None:
    async with env(SETTINGS) as api:
        await api.seed("pool1", 1)
        before = await api.snapshot()
        response = await api.client.request(method, path, content=content)
        assert (response.status_code, body(response)) == (404, {"ok": False})
        assert await api.snapshot() == before


async def test_empty_pool_or_empty_alias_backend_is_503(env: Env) -> None:
    async with env(SETTINGS) as api:
        await api.seed("pool1", 1)
        assert (await api.client.post("/api/v3/vm", json={"pool1": "1"})).status_code == 200
        second = await api.client.post("/api/v3/vm", json={"pool1": "1"})
        assert (second.status_code, second.text) == (503, '{\n  "ok": false\n}')
        by_alias = await api.client.post("/api/v3/vm/poolone")
        assert (by_alias.status_code, body(by_alias)) == (503, {"ok": False})


async def test_several_pools_and_counts(env: Env) -> None:
    async with env(SETTINGS) as api:
        one = await api.seed("pool1", 2, size=2)
        two = await api.seed("pool2", 1)
        response = await api.client.post("/api/v3/vm", json={"pool1": "2", "pool2": "1"})
        assert body(response) == {
            "ok": True,
            "pool1": {"hostname": [fqdn(v) for v in one]},
            "pool2": {"hostname": fqdn(two[0])},
        }


async def test_url_form_repeats_count_one_vm_each(env: Env) -> None:
    async with env(SETTINGS) as api:
        one = await api.seed("pool1", 2, size=2)
        two = await api.seed("pool2", 3, size=3)
        response = await api.client.post("/api/v3/vm/pool1+pool2+pool1+pool2+pool2")
        assert response.status_code == 200
        got = body(response)
        assert list(got) == ["ok", "pool1", "pool2"]
        assert got["pool1"]["hostname"] == [fqdn(v) for v in one]
        assert sorted(got["pool2"]["hostname"]) == sorted(fqdn(v) for v in two)


async def test_alias_over_three_pools_falls_through_empty_backends(env: Env) -> None:
    settings = make_settings([{"name": f"p{i}", "size": 1, "alias": ["all"]} for i in range(3)])
    async with env(settings) as api:
        seeded = {vm for i in range(3) for vm in await api.seed(f"p{i}", 1)}
        response = await api.client.post("/api/v3/vm", json={"all": "3"})
        assert response.status_code == 200
        assert set(body(response)["all"]["hostname"]) == seeded


async def test_partial_availability_returns_taken_vms_to_ready(env: Env) -> None:
    async with env(SETTINGS) as api:
        one = await api.seed("pool1", 2, size=2)
        two = await api.seed("pool2", 0)
        response = await api.client.post("/api/v3/vm", json={"pool1": "2", "pool2": "1"})
        assert (response.status_code, body(response)) == (503, {"ok": False})
        assert [await api.state("pool1", vm) for vm in one] == ["ready", "ready"]
        assert two == []
        log = await api.events("pool1")
        taken = [r for r in log if r.type == "vm.checked-out"]
        reverted = [r for r in log if r.type == "vm.checkout-reverted"]
        assert {r.vm for r in taken} == {r.vm for r in reverted} == set(one)
        assert len({r.correlation_id for r in taken + reverted}) == 1


async def test_checkout_records_default_lifetime_and_ignores_tokens_without_auth(env: Env) -> None:
    settings = make_settings(POOLS, config={"vm_lifetime": 6, "vm_lifetime_auth": 48})
    async with env(settings) as api:
        await api.seed("pool1", 1)
        response = await api.client.post("/api/v3/vm", json={"poolone": "1"}, headers={"X-AUTH-TOKEN": "abc"})
        assert response.status_code == 200
        [checked] = [r.event for r in await api.events("pool1") if r.type == "vm.checked-out"]
        assert checked == ev.VmCheckedOut(lifetime=6, requested_as="poolone")


async def test_weighted_backends_never_pick_weight_zero_first() -> None:
    settings = make_settings(
        [
            {"name": "heavy", "alias": ["both"], "clone_target": "a"},
            {"name": "light", "alias": ["both"], "clone_target": "b"},
        ],
        config={"backend_weight": {"a": 1, "b": 0}},
    )
    calls: list[str] = []

    class Recorder(PoolCommands):
        async def checkout(self, pool: str, n: int, event: ev.VmCheckedOut, meta: Any) -> list[str]:
            calls.append(pool)
            return [f"{pool}-vm"] * n

    service = CheckoutService(settings, Recorder(aioredis.Redis(), Keys("unused")), rng=random.Random(7))
    for _ in range(50):
        await service.checkout([("both", 1)], correlation_id="c")
    assert Counter(calls) == {"heavy": 50}


async def test_unweighted_alias_spreads_over_its_pools() -> None:
    settings = make_settings([{"name": "x", "alias": ["both"]}, {"name": "y", "alias": ["both"]}])
    calls: list[str] = []

    class Recorder(PoolCommands):
        async def checkout(self, pool: str, n: int, event: ev.VmCheckedOut, meta: Any) -> list[str]:
            calls.append(pool)
            return [] if pool == "y" else [f"{pool}-vm"] * n

        async def append(self, pool: str, events: Any, meta: Any, *, refill: int = 0) -> list[str]:
            calls.append(f"{events[0][1].__struct_config__.tag}:{pool}")
            return []

    service = CheckoutService(settings, Recorder(aioredis.Redis(), Keys("unused")), rng=random.Random(1))
    for _ in range(40):
        assert await service.checkout([("both", 1)], correlation_id="c") == {"both": [("x", "x-vm")]}
    assert calls.count("y") > 5  # y was tried first some of the time, then fell back to x
    with pytest.raises(QuotaError):
        await service.checkout([("y", 1)], correlation_id="c")
    assert calls[-1] == "pool.checkout-failed:y"  # the refusal is recorded in the log


async def test_show_running_vm(env: Env) -> None:
    async with env(make_settings(POOLS, config={"vm_lifetime": 24})) as api:
        [vm] = await api.seed("pool1", 1)
        checkout_at = api.clock.now
        assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200
        await api.project()
        api.clock.advance(hours=1.5)
        for name in (vm, fqdn(vm)):
            response = await api.client.get(f"/api/v3/vm/{name}")
            assert response.status_code == 200
            assert body(response) == {
                "ok": True,
                vm: {
                    "template": "pool1",
                    "lifetime": 24,
                    "running": 1.5,
                    "remaining": 22.5,
                    "start_time": _rfc3339(checkout_at),
                    "end_time": _rfc3339(checkout_at + 24 * 3_600_000),
                    "state": "running",
                    "ip": api.ips[vm],
                    "fqdn": fqdn(vm),
                    "host": "host-1",
                },
            }


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


async def test_show_vm_states_follow_vmpoolers_fields(env: Env) -> None:
    async with env(SETTINGS) as api:
        [ready, _] = await api.seed("pool1", 2, size=3)
        [cloning] = await api.in_state("pool1", "cloning")
        await api.project()

        async def state(vm: str) -> str:
            data = body(await api.client.get(f"/api/v3/vm/{vm}"))
            return str(data[vm]["state"])

        assert (await state(ready), await state(cloning)) == ("ready", "pending")
        [taken] = body(await api.client.post("/api/v3/vm/pool1"))["pool1"]["hostname"].split(".")[:1]
        assert (await api.client.delete(f"/api/v3/vm/{taken}")).status_code == 200
        await api.project()
        assert await state(taken) == "running"  # completed after a checkout reads "running" (§1.6.5)
        api.clock.advance(hours=2)
        await api.commands.append(
            "pool1", [(taken, ev.VmDestroyStarted()), (taken, ev.VmDestroyed())], Meta("test")
        )
        await api.project()
        data = body(await api.client.get(f"/api/v3/vm/{taken}"))[taken]
        assert (data["state"], data["running"]) == ("destroyed", 2.0)


async def test_show_unknown_vm_is_404(env: Env) -> None:
    async with env(SETTINGS) as api:
        response = await api.client.get("/api/v3/vm/no-such-vm")
        assert (response.status_code, body(response)) == (404, {"ok": False})


async def _running_vm(api: ApiEnv, pool: str = "pool1") -> str:
    [vm] = await api.seed(pool, 1)
    assert (await api.client.post(f"/api/v3/vm/{pool}")).status_code == 200
    return vm


async def test_put_tags_are_stored_filtered_and_empty_ones_skipped(env: Env) -> None:
    settings = make_settings(POOLS, tagfilter={"url": "(.*)\\/"})
    async with env(settings) as api:
        vm = await _running_vm(api)
        tags = {"url": "foo.com/something.html", "plain": "foo.com/x", "empty": "", "build": "12"}
        response = await api.client.put(f"/api/v3/vm/{fqdn(vm)}", json={"tags": tags})
        assert (response.status_code, body(response)) == (200, {"ok": True})
        await api.project()
        shown = body(await api.client.get(f"/api/v3/vm/{vm}"))[vm]
        assert shown["tags"] == {"url": "foo.com", "plain": "foo.com/x", "build": "12"}


async def test_put_tags_outside_allowed_tags_is_400_and_stores_nothing(env: Env) -> None:
    async with env(make_settings(POOLS, config={"allowed_tags": ["project"]})) as api:
        vm = await _running_vm(api)
        before = await api.snapshot()
        response = await api.client.put(f"/api/v3/vm/{vm}", json={"tags": {"project": "x", "owner": "me"}})
        assert (response.status_code, body(response)) == (
            400,
            {"ok": False, "failure": ["You provided unsuppored tags (owner)."]},
        )
        assert await api.snapshot() == before


@pytest.mark.parametrize(
    ("limit", "value", "status"),
    [
        (None, "20000", 200),
        (None, 36, 200),
        (None, "0", 400),
        (168, "200", 400),
        (168, "168", 400),
        (168, "167", 200),
    ],
)
async def test_put_lifetime(env: Env, limit: int | None, value: Any, status: int) -> None:
    config = {"max_lifetime_upper_limit": limit} if limit else {}
    async with env(make_settings(POOLS, config=config)) as api:
        vm = await _running_vm(api)
        response = await api.client.put(f"/api/v3/vm/{vm}", json={"lifetime": value})
        assert response.status_code == status, response.text
        await api.project()
        shown = body(await api.client.get(f"/api/v3/vm/{vm}"))[vm]
        assert shown["lifetime"] == (int(value) if status == 200 else 24)
        if status == 400:
            assert body(response)["failure"][0].startswith(("Lifetime must", "You provided a lifetime"))


async def test_put_lifetime_on_a_ready_vm_is_409(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        before = await api.snapshot()
        response = await api.client.put(f"/api/v3/vm/{vm}", json={"lifetime": 2})
        assert response.status_code == 409
        assert body(response)["ok"] is False
        assert await api.snapshot() == before


async def test_delete(env: Env) -> None:
    async with env(SETTINGS) as api:
        vm = await _running_vm(api)
        [ready] = await api.seed("pool2", 1)
        missing = await api.client.delete("/api/v3/vm/no-such-vm")
        assert (missing.status_code, body(missing)) == (404, {"ok": False})
        not_running = await api.client.delete(f"/api/v3/vm/{ready}")
        assert (not_running.status_code, body(not_running)) == (404, {"ok": False})
        assert await api.state("pool2", ready) == "ready"
        response = await api.client.delete(f"/api/v3/vm/{fqdn(vm)}")
        assert (response.status_code, body(response)) == (200, {"ok": True})
        assert await api.state("pool1", vm) == "completed"
        again = await api.client.delete(f"/api/v3/vm/{vm}")
        assert again.status_code == 404
