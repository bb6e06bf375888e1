"""On-demand requests through the decision scripts and the manager, against real Redis: slices,
the on-demand clone limit, delivery straight to running, TTL expiry, retries, permanent failures,
cancellation, and replay == live for the pool and the control slot. Time is a fake clock."""

from __future__ import annotations

import random
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

import events as ev
from commands.checkout import CheckoutService, Requester
from commands.errors import ConflictError, NotFound, Refused
from commands.manager import Manager
from commands.ondemand import OndemandService, is_permanent_error
from commands.pool import Meta, PoolCommands
from commands.provider import PoolTarget, Provider
from commands.settings import Settings
from events import CONTROL, Keys, Recorded, decode_entry
from events.fold import fold
from events.od_fold import fold_requests
from events.streams import xrange
from tests.integration._api import make_settings
from tests.integration.test_store import FakeClock, dump_decision_keys, read_requests, read_state
from vmpooler.wiring import pool_settings

MIN = 60_000
META = Meta("test")
POOLS = [
    {"name": "pool1", "size": 0, "alias": ["poolone"]},
    {"name": "pool2", "size": 1, "alias": ["poolone"]},
]


class Env:
    def __init__(self, redis: aioredis.Redis, prefix: str, settings: Settings, od_limit: int = 2) -> None:
        self.redis, self.keys, self.settings = redis, Keys(prefix), settings
        self.clock = FakeClock()
        self.cmds = PoolCommands(redis, self.keys, clock=self.clock)
        self.od = OndemandService(
            settings, self.cmds, CheckoutService(settings, self.cmds, rng=random.Random(3))
        )
        targets = cast(Any, lambda pool: (cast(Provider, None), PoolTarget(name=pool)))
        self.manager = Manager(
            self.cmds,
            self.keys,
            pool_settings(settings),
            targets,
            holder="m1",
            ondemand=self.od,
            ondemand_clone_limit=od_limit,
        )

    async def start(self) -> None:
        await self.manager.configure()

    async def request(self, rid: str, **wanted: int) -> None:
        await self.od.accept(rid, self.od.plan(list(wanted.items())), Requester("alice", "h1"), META)

    async def state(self, pool: str) -> dict[str, str]:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.state(pool)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def of_request(self, pool: str, rid: str, *states: str) -> list[str]:
        od = cast(dict[bytes, bytes], await self.redis.hgetall(f"{self.keys.base(pool)}:od"))
        st = await self.state(pool)
        return sorted(
            vm.decode()
            for vm, s in od.items()
            if s.decode().startswith(f"{rid}:") and (not states or st.get(vm.decode()) in states)
        )

    async def status(self, rid: str) -> str:
        raw = await self.redis.hget(f"{self.keys.base(CONTROL)}:od:status", rid)
        return raw.decode() if raw else ""

    async def boot(self, pool: str, vms: list[str]) -> list[str]:
        """Clone and boot ``vms`` as a worker would; returns each outcome of ``ready``."""
        await self.cmds.append(pool, [(vm, ev.VmCloned(seconds=1.0)) for vm in vms], META)
        return [await self.cmds.ready(pool, vm, ev.VmReady(boot_seconds=2.0), META) for vm in vms]

    async def log(self, pool: str) -> list[Recorded]:
        stream = self.keys.stream(pool)
        return [decode_entry(pool, p, f) for p, f in await xrange(self.redis, stream)]

    async def check_replay(self) -> None:
        for pool in self.settings.pool_names:
            live = await read_state(self.redis, self.keys, pool)
            assert live == fold(await self.log(pool)), f"fold of {pool} differs from the live state"
            before = await dump_decision_keys(self.redis, self.keys, pool)
            assert await self.cmds.rebuild_state(pool) == 0
            assert await dump_decision_keys(self.redis, self.keys, pool) == before
        ctl = await read_requests(self.redis, self.keys)
        assert ctl == fold_requests(await self.log(CONTROL))
        assert await self.cmds.rebuild_state(CONTROL) == 0
        assert await read_requests(self.redis, self.keys) == ctl


SETTINGS = make_settings(
    POOLS, config={"ondemand_request_ttl": 5, "max_vm_retries": 1, "vm_lifetime": 6, "vm_lifetime_auth": 12}
)


@pytest.fixture
async def env(redis: aioredis.Redis, prefix: str) -> Env:
    e = Env(redis, prefix, SETTINGS)
    await e.start()
    return e


async def test_clones_count_against_the_ondemand_limit_and_go_straight_to_running(env: Env) -> None:
    await env.request("r1", pool1=3)
    await env.manager.tick()
    cloning = await env.of_request("pool1", "r1", "cloning")
    assert len(cloning) == 2  # ondemand_clone_limit, although pool1's size is 0
    assert await env.boot("pool1", cloning) == ["delivered", "delivered"]
    assert await env.of_request("pool1", "r1", "running") == cloning
    await env.manager.tick()
    [third] = await env.of_request("pool1", "r1", "cloning")
    assert await env.status("r1") == "pending"
    await env.boot("pool1", [third])
    await env.manager.tick()
    assert await env.status("r1") == "fulfilled"
    checked = [r for r in await env.log("pool1") if r.type == "vm.checked-out"]
    assert [
        (r.event.request_id, r.event.lifetime, r.event.token_user, r.event.requested_as)  # type: ignore[union-attr]
        for r in checked
    ] == [("r1", 12, "alice", "pool1")] * 3
    assert not await env.redis.exists(f"{env.keys.base('pool1')}:odq")  # closed
    assert await env.redis.zcard(f"{env.keys.base(CONTROL)}:od:work") == 0  # released
    assert (await env.state("pool1")).keys() >= set(cloning)
    await env.check_replay()


async def test_ondemand_vms_do_not_count_against_the_pool_size(env: Env) -> None:
    await env.request("r1", pool2=2)
    await env.manager.tick()
    own = [vm for vm, s in (await env.state("pool2")).items() if s == "cloning"]
    assert len(own) == 3  # the pool's one VM plus the request's two
    await env.cmds.reset("pool2", META)  # a drain leaves the request's VMs alone
    assert len(await env.of_request("pool2", "r1", "cloning")) == 2
    await env.check_replay()


async def test_duplicate_request_id_is_a_conflict(env: Env) -> None:
    await env.request("r1", pool1=1)
    with pytest.raises(ConflictError):
        await env.request("r1", pool1=1)


async def test_ttl_expiry_fails_the_request_and_destroys_delivered_vms(env: Env) -> None:
    await env.request("r1", pool1=2)
    await env.manager.tick()
    first, second = await env.of_request("pool1", "r1", "cloning")
    await env.boot("pool1", [first])
    env.clock.now += 5 * MIN + 1
    await env.manager.tick()
    assert await env.status("r1") == "failed"
    states = await env.state("pool1")
    assert (states[first], states[second]) == ("completed", "completed")
    failed = [r for r in await env.log(CONTROL) if r.type == "ondemand.failed"]
    assert [r.event.reason for r in failed] == ["ttl"]  # type: ignore[union-attr]
    await env.check_replay()


async def test_transient_failures_are_retried_up_to_max_vm_retries(env: Env) -> None:
    await env.request("r1", pool1=1)
    await env.manager.tick()
    [vm] = await env.of_request("pool1", "r1", "cloning")
    await env.cmds.append("pool1", [(vm, ev.VmCloneFailed(error="timeout talking to vcenter"))], META)
    await env.manager.tick()
    assert await env.status("r1") == "pending"
    [retry] = await env.of_request("pool1", "r1", "cloning")
    assert retry != vm
    await env.cmds.append("pool1", [(retry, ev.VmCloneFailed(error="timeout again"))], META)
    await env.manager.tick()
    assert await env.status("r1") == "failed"
    failed = [r for r in await env.log(CONTROL) if r.type == "ondemand.failed"]
    assert [r.event.reason for r in failed] == ["Max retry attempts exceeded"]  # type: ignore[union-attr]
    await env.check_replay()


async def test_a_permanent_failure_fails_at_once(env: Env) -> None:
    await env.request("r1", pool1=2)
    await env.manager.tick()
    vm, other = await env.of_request("pool1", "r1", "cloning")
    failed = ev.VmCloneFailed(error="template not found", permanent=True)
    await env.cmds.append("pool1", [(vm, failed)], META)
    await env.manager.tick()
    assert await env.status("r1") == "failed"
    assert (await env.state("pool1"))[other] == "completed"  # the other clone is given up too
    reasons = [r.event.reason for r in await env.log(CONTROL) if r.type == "ondemand.failed"]  # type: ignore[union-attr]
    assert reasons == ["Configuration error: template not found"]
    await env.check_replay()


async def test_a_boot_timeout_is_retried_like_a_failed_clone(redis: aioredis.Redis, prefix: str) -> None:
    pools = [{"name": "pool1", "size": 0, "timeout": 10}]
    env = Env(redis, prefix, make_settings(pools, config={"ondemand_request_ttl": 60, "max_vm_retries": 2}))
    await env.start()
    await env.request("r1", pool1=1)
    await env.manager.tick()
    [vm] = await env.of_request("pool1", "r1", "cloning")
    await env.cmds.append("pool1", [(vm, ev.VmCloned(seconds=1.0))], META)
    env.clock.now += 11 * MIN
    await env.manager.tick()
    assert (await env.state("pool1"))[vm] == "completed"
    assert len(await env.of_request("pool1", "r1", "cloning")) == 1
    assert await env.status("r1") == "pending"
    await env.check_replay()


async def test_cancel_destroys_delivered_and_in_flight_vms(env: Env) -> None:
    await env.request("r1", pool1=2)
    await env.manager.tick()
    first, second = await env.of_request("pool1", "r1", "cloning")
    await env.boot("pool1", [first])
    await env.cmds.append("pool1", [(second, ev.VmCloned(seconds=1.0))], META)
    assert await env.od.cancel("r1", META) is True
    assert await env.od.cancel("r1", META) is False
    with pytest.raises(NotFound):
        await env.od.cancel("nope", META)
    await env.manager.tick()
    states = await env.state("pool1")
    assert (states[first], states[second]) == ("completed", "completed")
    with pytest.raises(Refused):
        await env.cmds.ready("pool1", second, ev.VmReady(boot_seconds=1.0), META)
    await env.check_replay()


async def test_cancel_after_fulfilment_destroys_the_delivered_vms(env: Env) -> None:
    await env.request("r1", poolone=2)
    await env.manager.tick()
    vms = {p: await env.of_request(p, "r1", "cloning") for p in ("pool1", "pool2")}
    assert sum(len(v) for v in vms.values()) == 2
    for pool, booting in vms.items():
        await env.boot(pool, booting)
    await env.manager.tick()
    assert await env.status("r1") == "fulfilled"
    await env.od.cancel("r1", META)
    await env.manager.tick()
    for pool, delivered in vms.items():
        states = await env.state(pool)
        assert all(states[vm] == "completed" for vm in delivered)
    await env.check_replay()


async def test_a_vm_of_a_closed_request_is_discarded_when_it_boots(env: Env) -> None:
    await env.request("r1", pool1=1)
    await env.manager.tick()
    [vm] = await env.of_request("pool1", "r1", "cloning")
    await env.cmds.append("pool1", [(vm, ev.VmCloned(seconds=1.0))], META)
    await env.cmds.ondemand_close("pool1", "r1", "fulfilled", META)  # closed without discarding
    assert await env.cmds.ready("pool1", vm, ev.VmReady(boot_seconds=1.0), META) == "discarded"


def test_permanent_errors_follow_vmpoolers_patterns() -> None:
    assert is_permanent_error("Template 'x' not found")
    assert is_permanent_error("Permission to perform this operation was denied")
    assert is_permanent_error("anything", flagged=True)
    assert is_permanent_error("boom", "AttributeError")
    assert not is_permanent_error("connection reset by peer", "ProviderError")
