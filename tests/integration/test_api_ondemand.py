"""``/api/v3/ondemandvm`` black-box over HTTP: every status code of the endpoints, and vmpooler's
on-demand behaviours (reference §1.2, §2.5, spec 28-31 and 41) with the manager, a real worker and
the dummy provider behind the app, time driven by a fake clock."""

from __future__ import annotations

import base64
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import pytest
import redis.asyncio as aioredis

import events as ev
from commands.checkout import CheckoutService
from commands.handlers import Handlers
from commands.manager import Manager
from commands.ondemand import OndemandService
from commands.provider import PoolTarget, Provider, ProviderError, VmInfo
from commands.settings import Settings
from commands.worker import Worker
from events import CONTROL, decode_entry
from events.od_fold import fold_requests
from projectors import OndemandStatus, ProjectionRunner
from providers.dummy import DummyProvider
from tests.integration._api import DOMAIN, ApiEnv, api_env, body, make_settings
from tests.integration.test_store import read_requests
from vmpooler.wiring import pool_settings

MIN = 60_000
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
POOLS = [
    {"name": "pool1", "size": 0, "dns_plugin": "example", "alias": ["poolone"], "clone_target": "compute1"},
    {"name": "pool2", "size": 0, "clone_target": "compute2"},
    {"name": "flaky", "size": 0, "createvm_fail_percent": 100},
    {"name": "broken", "size": 0},
]
CONFIG = {
    "ondemand_request_ttl": 5,
    "max_vm_retries": 2,
    "max_ondemand_instances_per_request": 4,
    "vm_lifetime": 6,
    "backend_weight": {"compute1": 5, "compute2": 0},
}
SETTINGS = make_settings(
    [*POOLS, {"name": "pool3", "size": 0, "alias": ["pool2"], "clone_target": "compute1"}], config=CONFIG
)


class Broken(DummyProvider):
    """Fails every clone with a message vmpooler counts as permanent."""

    async def create_vm(self, pool: PoolTarget, vm: str) -> VmInfo:
        raise ProviderError("Template golden-image not found")


@dataclass
class Od:
    api: ApiEnv
    manager: Manager
    worker: Worker
    runner: ProjectionRunner

    async def settle(self, rounds: int = 6) -> None:
        """Run the manager, the worker and the projectors until nothing more happens."""
        for _ in range(rounds):
            await self.manager.tick()
            while await self.worker.step(block_ms=None):
                await self.worker.drain()
            await self.worker.drain()
        await self.project()

    async def project(self) -> None:
        await self.api.project()
        await self.runner.catch_up()

    async def get(self, rid: str) -> tuple[int, Any]:
        await self.project()
        response = await self.api.client.get(f"/api/v3/ondemandvm/{rid}")
        return response.status_code, body(response)

    async def post(self, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        content = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        response = await self.api.client.post("/api/v3/ondemandvm", content=content, headers=headers or {})
        return response.status_code, body(response)

    async def of_request(self, pool: str, rid: str) -> dict[str, str]:
        od = cast(dict[bytes, bytes], await self.api.redis.hgetall(f"{self.api.keys.base(pool)}:od"))
        return {
            vm.decode(): await self.api.state(pool, vm.decode())
            for vm, s in od.items()
            if s.decode().startswith(f"{rid}:")
        }


Env = Callable[[Settings], AbstractAsyncContextManager[Od]]


@pytest.fixture
def env(redis: aioredis.Redis, redis_url: str, prefix: str) -> Env:
    @contextlib.asynccontextmanager
    async def make(settings: Settings) -> AsyncIterator[Od]:
        async with api_env(redis, redis_url, prefix, settings) as api:
            cmds = api.commands
            dummy = DummyProvider("dummy", redis, prefix=prefix, options={})
            broken = Broken("broken", redis, prefix=prefix, options={})

            def targets(pool: str) -> tuple[Provider, PoolTarget]:
                p = settings.pool(pool)
                assert p is not None
                provider = broken if pool == "broken" else dummy
                return provider, PoolTarget(name=pool, template=p.template, options=p.options)

            service = OndemandService(settings, cmds, CheckoutService(settings, cmds, rng=random.Random(7)))
            manager = Manager(
                cmds,
                api.keys,
                pool_settings(settings),
                targets,
                holder="m",
                ondemand=service,
                ondemand_clone_limit=2,
            )
            await manager.configure()
            worker = Worker(
                redis,
                api.keys,
                Handlers(cmds, targets, worker="w", poll=(0.001, 0.01)),
                list(settings.pool_names),
                consumer="w",
            )
            await worker.setup()
            runner = ProjectionRunner(
                redis, api.keys, [OndemandStatus()], [*settings.pool_names, CONTROL], consumer="od-tests"
            )
            yield Od(api, manager, worker, runner)

    return make


# --- POST -----------------------------------------------------------------------------------------


async def test_post_creates_a_pending_request(env: Env) -> None:
    async with env(SETTINGS) as od:
        status, got = await od.post({"pool1": "1"})
        assert (status, list(got), got["ok"]) == (201, ["ok", "request_id"], True)
        assert UUID.fullmatch(got["request_id"])
        await od.project()
        response = await od.api.client.get(f"/api/v3/ondemandvm/{got['request_id']}")
        assert response.status_code == 202
        assert (
            response.text
            == msgspec.json.format(
                msgspec.json.encode(
                    {
                        "ok": True,
                        "request_id": got["request_id"],
                        "ready": False,
                        "pool1": {"ready": "0", "pending": "1"},
                    }
                ),
                indent=2,
            ).decode()
        )


async def test_url_form_counts_repeats(env: Env) -> None:
    async with env(SETTINGS) as od:
        response = await od.api.client.post("/api/v3/ondemandvm/pool1+pool2+pool1")
        assert response.status_code == 201
        rid = body(response)["request_id"]
        assert await od.get(rid) == (
            202,
            {
                "ok": True,
                "request_id": rid,
                "ready": False,
                "pool1": {"ready": "0", "pending": "2"},
                "pool2": {"ready": "0", "pending": "1"},
            },
        )
        response = await od.api.client.post("/api/v3/ondemandvm/pool1+nosuch")
        assert (response.status_code, body(response)) == (404, {"ok": False, "bad_templates": ["nosuch"]})
        response = await od.api.client.post("/api/v3/ondemandvm/pool1++pool2")
        assert (response.status_code, body(response)) == (
            400,
            {"ok": False, "message": "Invalid pool name format"},
        )


async def test_given_request_id_and_its_duplicate(env: Env) -> None:
    async with env(SETTINGS) as od:
        assert await od.post({"pool1": 1, "request_id": "job-42"}) == (
            201,
            {"ok": True, "request_id": "job-42"},
        )
        assert await od.post({"pool2": "1", "request_id": "job-42"}) == (
            409,
            {"ok": False, "request_id": "job-42", "message": "request_id 'job-42' has already been created"},
        )
        # the amount is checked before duplicates
        assert await od.post({"pool1": "5", "request_id": "job-42"}) == (
            403,
            {"ok": False, "message": "requested amount of instances exceeds the maximum 4"},
        )


@pytest.mark.parametrize(
    ("payload", "status", "expected"),
    [
        (
            {"nosuch": "1", "pool1": "1", "other": "2"},
            404,
            {"ok": False, "bad_templates": ["nosuch", "other"]},
        ),
        (b"{not json", 400, {"ok": False, "message": "JSON payload could not be parsed"}),
        (b"null", 404, {"ok": False}),
        ({}, 404, {"ok": False}),
        ({"pool1": "abc"}, 400, {"ok": False, "message": "VM count for 'pool1' must be a positive integer"}),
        ({"pool1": "0"}, 400, {"ok": False, "message": "VM count for 'pool1' must be at least 1"}),
        ({"pool1": -2}, 400, {"ok": False, "message": "VM count for 'pool1' must be at least 1"}),
        (
            {"pool1": "1", "request_id": "a b"},
            400,
            {"ok": False, "message": "request_id must be 1-100 letters, digits, '.', '_' or '-'"},
        ),
    ],
)
async def test_rejected_posts_record_nothing(env: Env, payload: Any, status: int, expected: Any) -> None:
    async with env(SETTINGS) as od:
        before = await od.api.snapshot()
        assert await od.post(payload) == (status, expected)
        assert await od.api.snapshot() == before


async def test_weighted_alias_picks_the_weighted_pool_per_instance(env: Env) -> None:
    async with env(SETTINGS) as od:
        _, got = await od.post({"pool2": "3"})  # pool2 (compute2, weight 0) or pool3 (compute1, weight 5)
        [entry] = [
            decode_entry(CONTROL, p, f) for p, f in await od.api.redis.xrange(od.api.keys.control_stream())
        ]
        assert isinstance(entry.event, ev.OndemandAccepted)
        assert entry.event.slices == {"pool2": {"pool3": 3}}
        await od.settle()
        status, ready = await od.get(got["request_id"])
        assert (status, len(ready["pool2"]["hostname"])) == (200, 3)


# --- GET: through to ready, and the manager's behaviours -------------------------------------------


async def test_request_is_fulfilled_by_vms_that_go_straight_to_running(env: Env) -> None:
    async with env(SETTINGS) as od:
        _, got = await od.post({"poolone": "3", "pool2": "1"})
        rid = got["request_id"]
        await od.manager.tick()
        assert (
            len([s for s in (await od.of_request("pool1", rid)).values() if s == "cloning"]) == 2
        )  # clone limit
        await od.project()
        queue = body(await od.api.client.get("/api/v3/status?view=queue"))["queue"]
        # the third poolone VM waits for a clone slot: on-demand work not yet pending
        assert (queue["requested"], queue["pending"], queue["total"]) == (1, 3, 4)
        await od.settle()
        queue = body(await od.api.client.get("/api/v3/status?view=queue"))["queue"]
        assert (queue["requested"], queue["pending"], queue["running"]) == (0, 0, 4)
        status, ready = await od.get(rid)
        assert status == 200
        assert list(ready) == ["ok", "request_id", "ready", "poolone", "pool2"]
        [short] = await od.of_request("pool3", rid)  # pool2 is an alias of pool3 (weights), no domain
        assert ready["pool2"] == {"hostname": [short]}
        vms = await od.of_request("pool1", rid)
        assert sorted(ready["poolone"]["hostname"]) == sorted(f"{vm}.{DOMAIN}" for vm in vms)
        assert set(vms.values()) == {"running"}
        assert await od.api.in_state("pool1", "ready") == []  # never into the ready pool
        vm = next(iter(vms))
        shown = body(await od.api.client.get(f"/api/v3/vm/{vm}"))[vm]
        assert (shown["state"], shown["lifetime"]) == ("running", 6)


async def test_ttl_expiry_fails_the_request_and_destroys_its_vms(env: Env) -> None:
    async with env(SETTINGS) as od:
        _, got = await od.post({"pool1": "1", "flaky": "1"})
        rid = got["request_id"]
        await od.manager.tick()
        od.api.clock.advance(seconds=5 * 60 + 1)
        await od.settle()
        assert await od.get(rid) == (
            200,
            {
                "ok": True,
                "request_id": rid,
                "ready": False,
                "message": "The request failed to provision instances within the configured ondemand_request_ttl '5'",
            },
        )
        assert set((await od.of_request("pool1", rid)).values()) <= {"completed", "destroying", ""}


async def test_transient_failures_are_retried_then_give_up(env: Env) -> None:
    async with env(make_settings(POOLS, config={**CONFIG, "ondemand_request_ttl": 60})) as od:
        _, got = await od.post({"flaky": "1"})
        await od.settle(rounds=8)
        log = [decode_entry("flaky", p, f) for p, f in await od.api.redis.xrange(od.api.keys.stream("flaky"))]
        assert len([r for r in log if r.type == "vm.clone-failed"]) == 3  # one try and max_vm_retries (2)
        reasons = [
            decode_entry(CONTROL, p, f).event
            for p, f in await od.api.redis.xrange(od.api.keys.control_stream())
        ]
        assert [e.reason for e in reasons if isinstance(e, ev.OndemandFailed)] == [
            "Max retry attempts exceeded"
        ]
        assert (await od.get(got["request_id"]))[1]["ready"] is False


async def test_permanent_failure_fails_at_once(env: Env) -> None:
    async with env(make_settings(POOLS, config={**CONFIG, "ondemand_request_ttl": 60})) as od:
        _, got = await od.post({"broken": "2"})
        await od.settle()
        log = [
            decode_entry("broken", p, f) for p, f in await od.api.redis.xrange(od.api.keys.stream("broken"))
        ]
        failed = [r.event for r in log if isinstance(r.event, ev.VmCloneFailed)]
        assert 1 <= len(failed) <= 2  # the two clones started, none retried
        assert all(e.permanent for e in failed)
        events = [
            decode_entry(CONTROL, p, f).event
            for p, f in await od.api.redis.xrange(od.api.keys.control_stream())
        ]
        assert [e.reason for e in events if isinstance(e, ev.OndemandFailed)] == [
            "Configuration error: Template golden-image not found"
        ]
        status, shown = await od.get(got["request_id"])
        assert (status, shown["ready"]) == (200, False)
        assert "ondemand_request_ttl '60'" in shown["message"]


# --- DELETE ----------------------------------------------------------------------------------------


async def test_delete_in_flight_request_destroys_its_vms(env: Env) -> None:
    async with env(SETTINGS) as od:
        _, got = await od.post({"pool1": "2"})
        rid = got["request_id"]
        await od.manager.tick()
        assert set((await od.of_request("pool1", rid)).values()) == {"cloning"}
        response = await od.api.client.delete(f"/api/v3/ondemandvm/{rid}")
        assert (response.status_code, body(response)) == (200, {"ok": True})
        again = await od.api.client.delete(f"/api/v3/ondemandvm/{rid}")
        assert (again.status_code, body(again)) == (
            200,
            {"ok": True, "message": "the request has already been deleted"},
        )
        await od.settle()
        assert set((await od.of_request("pool1", rid)).values()) <= {"completed", "destroying", ""}
        assert await od.get(rid) == (
            200,
            {"ok": True, "request_id": rid, "ready": False, "message": "The request has been deleted"},
        )


async def test_delete_after_ready_destroys_delivered_vms(env: Env) -> None:
    async with env(SETTINGS) as od:
        _, got = await od.post({"pool1": "1"})
        rid = got["request_id"]
        await od.settle()
        assert (await od.get(rid))[0] == 200
        assert (await od.api.client.delete(f"/api/v3/ondemandvm/{rid}")).status_code == 200
        await od.settle()
        assert set((await od.of_request("pool1", rid)).values()) <= {"completed", "destroying", ""}


async def test_settled_requests_are_forgotten_after_their_retention(env: Env) -> None:
    async with env(SETTINGS) as od:
        assert (await od.post({"pool1": "1", "request_id": "kept"}))[0] == 201
        assert (await od.post({"nosuch": "1"}))[0] == 404
        assert (await od.post({"pool2": "1", "request_id": "gone"}))[0] == 201
        await od.settle()
        assert (await od.api.client.delete("/api/v3/ondemandvm/gone")).status_code == 200
        await od.settle()
        od.api.clock.advance(hours=15 * 24 + 1)  # a deleted request is kept 15 days, a ready one 30
        await od.settle()
        assert (await od.get("kept"))[0] == 200
        assert (await od.get("gone"))[0] == 404
        assert (await od.post({"pool2": "1", "request_id": "gone"}))[0] == 201  # the id is free again
        od.api.clock.advance(hours=15 * 24)
        await od.settle()
        assert (await od.get("kept"))[0] == 404
        types = [r.type for r in await _control_log(od)]
        assert types.count("ondemand.forgotten") == 2
        assert await read_requests(od.api.redis, od.api.keys) == fold_requests(await _control_log(od))


async def _control_log(od: Od) -> list[Any]:
    entries = await od.api.redis.xrange(od.api.keys.control_stream())
    return [decode_entry(CONTROL, pos, fields) for pos, fields in entries]


async def test_unknown_request_is_404(env: Env) -> None:
    async with env(SETTINGS) as od:
        expected = {"ok": False, "message": "no request found for request_id 'nope'"}
        assert await od.get("nope") == (404, expected)
        response = await od.api.client.delete("/api/v3/ondemandvm/nope")
        assert (response.status_code, body(response)) == (404, expected)


# --- tokens ---------------------------------------------------------------------------------------


async def test_tokens_are_required_and_own_the_request(env: Env) -> None:
    settings = make_settings(POOLS, config=CONFIG, auth={"provider": "dummy"})
    async with env(settings) as od:
        assert await od.post({"pool1": "1"}) == (401, {"ok": False})
        tokens = []
        for user in ("alice", "bob"):
            auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()}
            tokens.append(body(await od.api.client.post("/api/v3/token", headers=auth))["token"])
        alice, bob = ({"X-AUTH-TOKEN": t} for t in tokens)
        assert (await od.post({"pool1": "1"}, {"X-AUTH-TOKEN": "bogus"}))[0] == 401
        status, got = await od.post({"pool1": "1"}, alice)
        assert status == 201
        rid = got["request_id"]
        await od.settle()
        [vm] = await od.of_request("pool1", rid)
        shown = body(await od.api.client.get(f"/api/v3/vm/{vm}"))[vm]
        assert shown["state"] == "running"
        assert (await od.api.client.delete(f"/api/v3/ondemandvm/{rid}")).status_code == 401
        assert (await od.api.client.delete(f"/api/v3/ondemandvm/{rid}", headers=bob)).status_code == 401
        assert (await od.api.client.delete(f"/api/v3/ondemandvm/{rid}", headers=alice)).status_code == 200
