"""The event store against real Redis: replay equals live, decisions hold under concurrency,
workers survive crashes, projections rebuild byte for byte, reconcile converges.

Every test works under its own key prefix; time is a fake clock handed to ``PoolCommands``, so
deadlines are driven, never slept for. Waits on background tasks poll with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import events as ev
from commands.errors import Refused
from commands.handlers import Handlers
from commands.names import NameGenerator
from commands.pool import Meta, PoolCommands
from commands.provider import PoolTarget, Provider
from commands.worker import GROUP, Worker
from events import CONTROL, Event, Keys, Recorded, decode_entry
from events.fold import PoolState, accepts, fire, fold
from events.lease import Lease
from events.lifecycle import PENDING, STATES, TRANSITIONS
from events.od_fold import RequestsState, fold_requests
from events.streams import text, xrange
from projectors import ALL_PROJECTIONS, ProjectionRunner
from providers.dummy import DummyProvider, DummyVm

T = TypeVar("T")
T0 = 1_700_000_000_000
SEC, MIN, HOUR = 1000, 60_000, 3_600_000
POOL = "debian-12"
META = Meta("test")


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# --- reading Redis -------------------------------------------------------------------------------


def _ms(score: float) -> int:
    assert float(score).is_integer(), score
    return int(score)


async def read_state(redis: aioredis.Redis, keys: Keys, pool: str) -> PoolState:
    """The pool's decision-state keys as a ``PoolState`` (checking the state hash and the per-state
    sorted sets agree: every live VM is in exactly the sorted set of its state)."""
    base = keys.base(pool)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.state(pool))
        for s in STATES:
            pipe.zrange(keys.in_state(pool, s), 0, -1, withscores=True)
        pipe.zrange(keys.due(pool), 0, -1, withscores=True)
        pipe.hgetall(f"{base}:carry")
        pipe.zrange(f"{base}:gone", 0, -1, withscores=True)
        pipe.hgetall(keys.config(pool))
        pipe.hgetall(f"{base}:od")
        pipe.zrange(f"{base}:odq", 0, -1, withscores=True)
        pipe.hgetall(f"{base}:odm")
        pipe.hgetall(f"{base}:odn")
        raw = await pipe.execute()
    state = {k.decode(): v.decode() for k, v in raw[0].items()}
    entered: dict[str, int] = {}
    for s, members in zip(STATES, raw[1 : 1 + len(STATES)], strict=True):
        for member, score in members:
            vm = member.decode()
            assert state.get(vm) == s, f"{vm} is in s:{s} but its state is {state.get(vm)!r}"
            entered[vm] = _ms(score)
    assert set(entered) == set(state), "a VM has a state but no entry time"
    due_raw, carry_raw, gone_raw, cfg_raw, od_raw, odq_raw, odm_raw, odn_raw = raw[1 + len(STATES) :]
    return PoolState(
        state=state,
        entered=entered,
        due={m.decode(): _ms(s) for m, s in due_raw},
        carry={k.decode(): int(v) for k, v in carry_raw.items()},
        gone={m.decode(): _ms(s) for m, s in gone_raw},
        cfg={k.decode(): v.decode() for k, v in cfg_raw.items()},
        od={k.decode(): v.decode() for k, v in od_raw.items()},
        odq={m.decode(): _ms(s) for m, s in odq_raw},
        odm={k.decode(): v.decode() for k, v in odm_raw.items()},
        odn={k.decode(): v.decode() for k, v in odn_raw.items()},
    )


async def read_requests(redis: aioredis.Redis, keys: Keys) -> RequestsState:
    """The control slot's on-demand request keys as a ``RequestsState``."""
    root = keys.base(CONTROL)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(f"{root}:od:status")
        pipe.zrange(f"{root}:od:due", 0, -1, withscores=True)
        pipe.zrange(f"{root}:od:work", 0, -1, withscores=True)
        pipe.hgetall(f"{root}:od:req")
        pipe.zrange(f"{root}:od:forget", 0, -1, withscores=True)
        status, due, work, req, forget = await pipe.execute()
    return RequestsState(
        status={k.decode(): v.decode() for k, v in status.items()},
        due={m.decode(): _ms(s) for m, s in due},
        work={m.decode(): _ms(s) for m, s in work},
        req={k.decode(): v.decode() for k, v in req.items()},
        forget={m.decode(): _ms(s) for m, s in forget},
    )


async def dump_key(redis: aioredis.Redis, key: bytes | str) -> tuple[str, Any]:
    """A key's type and full value, in a comparable form."""
    kind = text(await redis.type(key))
    if kind == "string":
        return kind, await redis.get(key)
    if kind == "hash":
        return kind, sorted((await redis.hgetall(key)).items())
    if kind == "set":
        return kind, sorted(await redis.smembers(key))
    if kind == "list":
        return kind, await redis.lrange(key, 0, -1)
    if kind == "zset":
        return kind, await redis.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return kind, await redis.xrange(key)
    raise AssertionError(f"unexpected type {kind} of {key!r}")


async def dump(
    redis: aioredis.Redis, pattern: str, skip: Callable[[str], bool] = lambda k: False
) -> dict[str, Any]:
    keys = sorted([k.decode() async for k in redis.scan_iter(match=pattern, count=1000)])
    return {k: await dump_key(redis, k) for k in keys if not skip(k)}


def _not_decision_key(suffix: str) -> bool:
    return suffix == "events" or suffix == "dead" or suffix.startswith(("rm:", "lease:"))


async def dump_decision_keys(redis: aioredis.Redis, keys: Keys, pool: str) -> dict[str, Any]:
    """Every key of the pool that is not its log, a read model, a lease or dead letters."""
    base = keys.base(pool)
    return await dump(redis, f"{base}:*", lambda k: _not_decision_key(k[len(base) + 1 :]))


async def read_log(redis: aioredis.Redis, keys: Keys, pool: str, after: str = "-") -> list[Recorded]:
    start = after if after == "-" else f"({after}"
    return [decode_entry(pool, pos, f) for pos, f in await xrange(redis, keys.stream(pool), min=start)]


async def poll(check: Callable[[], Awaitable[T | None]], within: float = 10.0, every: float = 0.02) -> T:
    """Await ``check`` until it returns something truthy, or fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        got = await check()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)


def settings_(
    size: int, clone_limit: int, *, ready_ttl: int = 0, timeout: int = 0, template: str = "tpl"
) -> ev.PoolConfigured:
    return ev.PoolConfigured(
        size=size, template=template, clone_limit=clone_limit, ready_ttl=ready_ttl, timeout=timeout
    )


def in_state(state: PoolState, *states: str) -> list[str]:
    return sorted(vm for vm, s in state.state.items() if s in states)


async def make_ready(cmds: PoolCommands, pool: str, vms: Sequence[str]) -> None:
    """Take cloning VMs to ready, as a worker would."""
    batch: list[tuple[str, Event]] = []
    for vm in vms:
        batch += [(vm, ev.VmCloned(seconds=1.0)), (vm, ev.VmReady(boot_seconds=2.0))]
    await cmds.append(pool, batch, META)


# --- random histories ----------------------------------------------------------------------------


class Choose:
    """Random choices, from hypothesis (shrinkable) or from a seeded ``random.Random``."""

    def __init__(self, data: st.DataObject | None = None, rng: random.Random | None = None) -> None:
        self.data, self.rng = data, rng

    def int(self, lo: int, hi: int) -> int:
        if self.data is not None:
            return self.data.draw(st.integers(lo, hi))
        assert self.rng is not None
        return self.rng.randint(lo, hi)

    def pick(self, items: Sequence[T]) -> T:
        return items[self.int(0, len(items) - 1)]


class History:
    """Drives a pool through a random history with the real commands and a fake clock (time may
    run for days, so gone VMs are forgotten and deadlines of every kind fire)."""

    OPS = {
        "configure": 2,
        "checkout": 8,
        "return": 3,
        "clone_started": 2,
        "cloned": 10,
        "ready": 12,
        "clone_failed": 2,
        "lifetime": 2,
        "advance": 4,
        "fire": 2,
        "reset": 1,
        "reconcile": 3,
        "destroy_started": 3,
        "destroyed": 3,
        "destroy_failed": 3,
        "tag": 2,
        "discard": 2,
        "refused": 3,
        "revert": 2,
        "od_open": 2,
        "od_start": 3,
        "od_close": 1,
    }
    """Operation → weight."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, pool: str, choose: Choose, *, seed: int) -> None:
        self.redis, self.keys, self.pool, self.choose = redis, keys, pool, choose
        self.clock = FakeClock()
        self.cmds = PoolCommands(redis, keys, names=NameGenerator(seed=seed), clock=self.clock)
        self.ops = [op for op, w in self.OPS.items() for _ in range(w)]
        self.hand = 0
        self.live = PoolState()

    async def start(self) -> None:
        c = self.choose
        await self.cmds.configure(
            self.pool,
            ev.PoolConfigured(
                size=c.int(2, 6),
                template="t1",
                clone_limit=c.int(1, 4),
                ready_ttl=c.int(0, 120),
                timeout=c.int(0, 120),
            ),
            META,
        )

    async def step(self) -> str:
        self.clock.now += self.choose.int(0, 1500)
        self.live = await read_state(self.redis, self.keys, self.pool)
        op = self.choose.pick(self.ops)
        await getattr(self, f"_{op}")()
        return op

    async def _append(self, vm: str, event: Event) -> None:
        await self.cmds.append(self.pool, [(vm, event)], META, refill=self.choose.int(0, 2))

    def _vm(self, *states: str) -> str | None:
        vms = in_state(self.live, *states)
        return self.choose.pick(vms) if vms else None

    async def _configure(self) -> None:
        c = self.choose
        await self.cmds.configure(
            self.pool,
            ev.PoolConfigured(
                size=c.pick([0, *range(1, 7), 3, 4]),
                template=c.pick(["t1", "t2"]),
                clone_limit=c.pick([0, 1, 2, 3, 4, 2, 3]),
                ready_ttl=c.int(0, 120),
                timeout=c.int(0, 120),
                clone_target=c.pick(["", "c1"]),
            ),
            META,
        )

    async def _checkout(self) -> None:
        body = ev.VmCheckedOut(lifetime=self.choose.int(0, 3), token_hash=self.choose.pick(["", "h1", "h2"]))
        await self.cmds.checkout(self.pool, self.choose.int(1, 3), body, META)

    async def _one(self, states: tuple[str, ...], event: Event) -> None:
        vm = self._vm(*states)
        if vm is not None:
            await self._append(vm, event)

    async def _return(self) -> None:
        await self._one(("running",), ev.VmReturned())

    async def _clone_started(self) -> None:
        await self._one(("cloning",), ev.VmCloneStarted(worker="w", attempt=self.choose.int(1, 3)))

    async def _many(self, state: str, event: Event) -> None:
        """Some (at least one) of the VMs in ``state`` take ``event``, in one append."""
        vms = in_state(self.live, state)
        if vms:
            chosen = [vm for vm in vms if self.choose.int(0, 2)] or [self.choose.pick(vms)]
            await self.cmds.append(
                self.pool, [(vm, event) for vm in chosen], META, refill=self.choose.int(0, 2)
            )

    async def _cloned(self) -> None:
        await self._many("cloning", ev.VmCloned(seconds=1.5))

    async def _ready(self) -> None:
        """Some booting VMs answer: the pool's become ready, on-demand ones go to their request."""
        vms = in_state(self.live, "booting")
        for vm in [vm for vm in vms if self.choose.int(0, 2)] or vms[:1]:
            await self.cmds.ready(self.pool, vm, ev.VmReady(boot_seconds=3.0), META)

    async def _clone_failed(self) -> None:
        await self._one(("cloning",), ev.VmCloneFailed(error="boom", permanent=self.choose.int(0, 3) == 0))

    async def _od_open(self) -> None:
        c = self.choose
        opened = ev.PoolOndemandRequested(
            request_id=c.pick(["r1", "r2", "r3"]),
            requested_as=c.pick(["a", "b"]),
            count=c.int(1, 3),
            lifetime=c.int(0, 3),
            token_user=c.pick(["", "u"]),
            max_retries=c.int(0, 2),
        )
        await self.cmds.ondemand_open(self.pool, opened, META)

    async def _od_start(self) -> None:
        """Never more on-demand clones in flight than the limit (unless there were before the call)."""
        limit = self.choose.int(0, 3)
        before = len([vm for vm in in_state(self.live, "cloning") if vm in self.live.od])
        made = await self.cmds.ondemand_start(self.pool, limit, META)
        after = await read_state(self.redis, self.keys, self.pool)
        in_flight = len([vm for vm in in_state(after, "cloning") if vm in after.od])
        assert in_flight <= max(before, limit), f"{in_flight} on-demand clones over the limit {limit}"
        assert not made or in_flight <= limit

    async def _od_close(self) -> None:
        c = self.choose
        await self.cmds.ondemand_close(
            self.pool, c.pick(["r1", "r2", "r3"]), c.pick(["fulfilled", "failed", "cancelled"]), META
        )

    async def _lifetime(self) -> None:
        await self._one(("running",), ev.VmLifetimeChanged(hours=self.choose.int(0, 4)))

    async def _tag(self) -> None:
        await self._one(tuple(STATES), ev.VmTagged(tags={"k": str(self.choose.int(0, 9))}))

    async def _discard(self) -> None:
        await self._one((*PENDING, "ready", "running"), ev.VmDiscarded(reason="shrunk"))

    async def _revert(self) -> None:
        await self._one(("running",), ev.VmCheckoutReverted())

    async def _destroy_started(self) -> None:
        await self._one(("completed",), ev.VmDestroyStarted(worker="w"))

    async def _destroyed(self) -> None:
        await self._one(("completed", "destroying"), ev.VmDestroyed(seconds=0.5))

    async def _destroy_failed(self) -> None:
        failed = ev.VmDestroyFailed(
            error="busy", attempt=self.choose.int(1, 3), retry_in=self.choose.pick([0.0, 0.5, 2.0, 30.0])
        )
        await self._one(("destroying",), failed)

    async def _advance(self) -> None:
        self.clock.now += self.choose.pick([SEC, MIN, 3 * MIN, 10 * MIN, 40 * MIN, 2 * HOUR, 20 * HOUR])
        await self._fire()

    async def _fire(self) -> None:
        await self.cmds.fire_due(self.pool, META, limit=self.choose.int(1, 200))

    async def _reset(self) -> None:
        await self.cmds.reset(self.pool, META)

    async def _reconcile(self) -> None:
        inventory = sorted(self.live.state)
        if inventory and self.choose.int(0, 1):  # one VM deleted behind our back
            inventory.remove(self.choose.pick(inventory))
        gone = sorted(self.live.gone)
        if gone and self.choose.int(0, 1):  # one VM we destroyed still listed
            inventory.append(self.choose.pick(gone))
        if self.choose.int(0, 1):  # one VM made by hand
            inventory.append(f"hand{self.hand}")
            self.hand += 1
        listed_at = self.clock.now - self.choose.int(0, 5 * SEC)
        await self.cmds.reconcile(self.pool, inventory, listed_at, META)

    async def _refused(self) -> None:
        """An event the fold refuses is refused by the script too, with nothing appended, even when
        it comes second in a batch after an allowed one."""
        vm = self.choose.pick([*sorted(self.live.state), "nobody"])
        tag = self.choose.pick(sorted(t for t in TRANSITIONS if not accepts(self.live, t, vm)))
        body = _REFUSABLE[tag]
        batch: list[tuple[str, Event]] = [(vm, body)]
        ok = self._vm("running")
        if ok is not None and ok != vm:
            batch.insert(0, (ok, ev.VmTagged(tags={"x": "y"})))
        before = await self.redis.xlen(self.keys.stream(self.pool))
        with pytest.raises(Refused) as refused:
            await self.cmds.append(self.pool, batch, META, refill=2)
        assert (refused.value.vm, refused.value.event_type) == (vm, tag)
        assert refused.value.state == self.live.state.get(vm, "")
        assert await self.redis.xlen(self.keys.stream(self.pool)) == before


_REFUSABLE: dict[str, Event] = {
    "vm.clone-requested": ev.VmCloneRequested(template="t"),
    "vm.clone-started": ev.VmCloneStarted(worker="w"),
    "vm.cloned": ev.VmCloned(seconds=1.0),
    "vm.clone-failed": ev.VmCloneFailed(error="x"),
    "vm.ready": ev.VmReady(boot_seconds=1.0),
    "vm.checked-out": ev.VmCheckedOut(lifetime=1),
    "vm.checkout-reverted": ev.VmCheckoutReverted(),
    "vm.lifetime-changed": ev.VmLifetimeChanged(hours=1),
    "vm.tagged": ev.VmTagged(),
    "vm.returned": ev.VmReturned(),
    "vm.expired": ev.VmExpired(reason="lifetime"),
    "vm.discarded": ev.VmDiscarded(reason="x"),
    "vm.destroy-requested": ev.VmDestroyRequested(),
    "vm.destroy-started": ev.VmDestroyStarted(),
    "vm.destroy-failed": ev.VmDestroyFailed(error="x", attempt=1),
    "vm.destroyed": ev.VmDestroyed(),
    "vm.discovered": ev.VmDiscovered(),
    "vm.vanished": ev.VmVanished(),
    "vm.disk-requested": ev.VmDiskRequested(size_gb=1),
    "vm.disk-added": ev.VmDiskAdded(size_gb=1),
    "vm.snapshot-requested": ev.VmSnapshotRequested(name="s"),
    "vm.snapshot-taken": ev.VmSnapshotTaken(name="s"),
    "vm.revert-requested": ev.VmRevertRequested(name="s"),
    "vm.reverted": ev.VmReverted(name="s"),
    "vm.task-failed": ev.VmTaskFailed(task="disk", error="x"),
    "vm.migrated": ev.VmMigrated(host="h"),
}


def test_refusable_samples_cover_every_transition() -> None:
    assert set(_REFUSABLE) == set(TRANSITIONS)


_examples = iter(range(1_000_000))


def _sub(prefix: str) -> Keys:
    """A fresh prefix per hypothesis example (the ``prefix`` fixture is per test, not per example)."""
    return Keys(f"{prefix}.{next(_examples)}")


# --- replay equals live --------------------------------------------------------------------------


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), seed=st.integers(0, 2**32))
async def test_replay_equals_live(redis: aioredis.Redis, prefix: str, data: st.DataObject, seed: int) -> None:
    """(a) after every command the decision keys equal ``events.fold`` of the log; (b) at the end,
    ``rebuild_state`` from the log reproduces every decision key byte for byte."""
    keys = _sub(prefix)
    h = History(redis, keys, POOL, Choose(data=data), seed=seed)
    await h.start()
    folded, last, ops = PoolState(), "-", []
    for _ in range(60):
        ops.append(await h.step())
        new = await read_log(redis, keys, POOL, after=last)
        if new:
            folded, last = fold(new, folded), new[-1].position
        assert await read_state(redis, keys, POOL) == folded, f"live state diverged from the fold after {ops}"
    before = await dump_decision_keys(redis, keys, POOL)
    assert f"{keys.base(POOL)}:cfg" in before
    assert await h.cmds.rebuild_state(POOL) == 0
    assert await dump_decision_keys(redis, keys, POOL) == before
    assert fold(await read_log(redis, keys, POOL)) == folded


@pytest.mark.slow
@settings(
    max_examples=20,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_request_replay_equals_live(redis: aioredis.Redis, prefix: str, data: st.DataObject) -> None:
    """The control slot's request keys equal ``fold_requests`` of the control stream after every
    request event, whether the status allowed it or not, and TTLs and retentions fired by the clock."""
    keys, c = _sub(prefix), Choose(data=data)
    clock = FakeClock()
    cmds = PoolCommands(redis, keys, clock=clock)
    for _ in range(40):
        clock.now += c.pick([0, SEC, MIN, 10 * MIN])
        rid = c.pick(["r1", "r2", "r3"])
        event = c.pick(
            [
                ev.OndemandAccepted(
                    request_id=rid,
                    slices={"a": {"p": c.int(1, 3)}},
                    lifetime=c.int(0, 2),
                    ttl_ms=c.pick([0, MIN, 5 * MIN]),
                ),
                ev.OndemandFulfilled(request_id=rid),
                ev.OndemandFailed(request_id=rid, reason="x"),
                ev.OndemandCancelled(request_id=rid),
                ev.OndemandReleased(
                    request_id=rid,
                    status=c.pick(["fulfilled", "failed", "cancelled"]),
                    keep_ms=c.pick([0, MIN, 10 * MIN]),
                ),
                ev.OndemandForgotten(request_id=rid),
            ]
        )
        if c.int(0, 4) == 0:
            await cmds.control_fire(META)
        else:
            await cmds.control(rid, event, META)
        log = [decode_entry(CONTROL, p, f) for p, f in await xrange(redis, keys.control_stream())]
        assert await read_requests(redis, keys) == fold_requests(log)


# --- invariants, read from the log ---------------------------------------------------------------


def check_log_invariants(log: Sequence[Recorded]) -> Counter[str]:
    """A VM is handed out only when ready (never twice, never after it was retired or destroyed);
    after each command ready + pending <= size; a clone is requested only within clone_limit."""
    handable: set[str] = set()
    state = PoolState()
    seen: Counter[str] = Counter()
    for i, r in enumerate(log):
        seen[r.type] += 1
        if r.type == "vm.checked-out":
            assert r.vm in handable, f"{r.vm} handed out while not ready (entry {r.position})"
            handable.discard(r.vm)
        elif r.type in ("vm.ready", "vm.checkout-reverted"):
            handable.add(r.vm)
        elif r.vm and TRANSITIONS[r.type].target not in ("=", "running"):
            handable.discard(r.vm)
        state = fold([r], state)
        size, limit = int(state.cfg["size"]), int(state.cfg["clone_limit"])
        cloning = len([vm for vm in in_state(state, "cloning") if vm not in state.od])
        pending_ready = len(
            [vm for vm in in_state(state, "cloning", "booting", "ready") if vm not in state.od]
        )
        if r.type == "vm.clone-requested" and r.vm not in state.od:
            assert cloning <= limit, f"{cloning} clones in flight over the limit {limit} at {r.position}"
            assert pending_ready <= size, f"clone requested over size at {r.position}"
        command_ends = (
            i + 1 == len(log) or log[i + 1].event_id.rsplit("-", 1)[0] != r.event_id.rsplit("-", 1)[0]
        )
        if command_ends:
            assert pending_ready <= size, f"ready + pending {pending_ready} > size {size} after {r.position}"
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
async def test_log_never_breaks_the_pool_invariants(redis: aioredis.Redis, prefix: str, seed: int) -> None:
    keys = Keys(prefix)
    h = History(redis, keys, POOL, Choose(rng=random.Random(seed)), seed=seed)
    await h.start()
    for _ in range(120):
        await h.step()
    seen = check_log_invariants(await read_log(redis, keys, POOL))
    for tag in ("vm.checked-out", "vm.clone-requested", "vm.ready", "pool.configured"):
        assert seen[tag] > 0, f"history too tame: no {tag}"  # the check above had something to check


def test_invariant_check_catches_a_double_checkout() -> None:
    """The checker itself fails on a forged log, so its silence above means something."""
    cfg = settings_(1, 1)
    base = [
        (cfg, ""),
        (ev.VmCloneRequested(template="t"), "a"),
        (ev.VmCloned(seconds=1), "a"),
        (ev.VmReady(boot_seconds=1), "a"),
        (ev.VmCheckedOut(lifetime=1), "a"),
    ]
    log = [_forged(e, vm, i) for i, (e, vm) in enumerate([*base, (ev.VmCheckedOut(lifetime=1), "a")])]
    with pytest.raises(AssertionError, match="handed out while not ready"):
        check_log_invariants(log)
    over = [
        _forged(e, vm, i)
        for i, (e, vm) in enumerate(
            [(cfg, ""), (ev.VmCloneRequested(template="t"), "a"), (ev.VmCloneRequested(template="t"), "b")]
        )
    ]
    with pytest.raises(AssertionError, match="over the limit"):
        check_log_invariants(over)


def _forged(event: Event, vm: str, i: int) -> Recorded:
    tag = event.__struct_config__.tag
    assert isinstance(tag, str)
    return Recorded(
        stream=POOL,
        position=f"{i}-0",
        event_id=f"c{i}-1",
        type=tag,
        at=T0 + i,
        vm=vm,
        actor="t",
        correlation_id="",
        causation_id="",
        version=1,
        event=event,
    )  # type: ignore[arg-type]


# --- concurrency: 200 checkouts, 50 VMs, two processes -------------------------------------------


async def _checkouts(url: str, prefix: str, n: int) -> None:
    """One "API process": ``n`` concurrent checkouts once both processes are ready (a barrier in
    Redis); the results go back through Redis too, so a crashed child fails the test at once."""
    client = aioredis.Redis.from_url(url, max_connections=n)
    try:
        cmds = PoolCommands(client, Keys(prefix))
        await client.rpush(f"{prefix}:test:ready", 1)
        assert await client.blpop([f"{prefix}:test:go"], timeout=30), "never started"

        async def one(i: int) -> list[str]:
            for _ in range(i % 20):  # spread the calls over some round trips, so the processes interleave
                await client.ping()
            return await cmds.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), Meta("api"))

        got = await asyncio.gather(*(one(i) for i in range(n)))
        await client.rpush(f"{prefix}:test:out", msgspec.json.encode([vms[0] if vms else "" for vms in got]))
    finally:
        await client.aclose()


def _checkout_process(url: str, prefix: str, n: int) -> None:
    asyncio.run(_checkouts(url, prefix, n))


@pytest.mark.slow
async def test_concurrent_checkouts_from_two_processes_hand_out_each_vm_once(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys)
    await cmds.configure(POOL, settings_(50, 50), META)
    await make_ready(cmds, POOL, in_state(await read_state(redis, keys, POOL), "cloning"))
    await cmds.configure(POOL, settings_(50, 0), META)  # no refill: no new VM can become ready
    ready = in_state(await read_state(redis, keys, POOL), "ready")
    assert len(ready) == 50
    seeded = await redis.xlen(keys.stream(POOL))

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_checkout_process, args=(redis_url, prefix, 100)) for _ in range(2)]
    for p in procs:
        p.start()
    try:

        async def all_(key: str) -> bool:
            assert all(p.exitcode in (None, 0) for p in procs), "a checkout process crashed"
            return await redis.llen(key) == len(procs)

        await poll(lambda: all_(f"{prefix}:test:ready"), within=60, every=0.05)
        await redis.rpush(f"{prefix}:test:go", *[1] * len(procs))
        await poll(lambda: all_(f"{prefix}:test:out"), within=60, every=0.05)
    finally:
        for p in procs:
            p.join(10)
            if p.exitcode is None:
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    results = [
        msgspec.json.decode(r, type=list[str]) for r in await redis.lrange(f"{prefix}:test:out", 0, -1)
    ]

    handed = [vm for r in results for vm in r if vm]
    assert len(handed) == 50
    assert sorted(handed) == ready
    assert sum(1 for r in results for vm in r if not vm) == 150
    assert all(any(r) for r in results), "one process got nothing: the race was not a race"
    log = await read_log(redis, keys, POOL)
    checked_out = Counter(r.vm for r in log if r.type == "vm.checked-out")
    assert set(checked_out) == set(ready)
    assert set(checked_out.values()) == {1}
    assert len(log) == seeded + 50  # nothing but the 50 checkouts
    assert in_state(await read_state(redis, keys, POOL), "running") == ready


# --- workers -------------------------------------------------------------------------------------


def _targets(provider: Provider) -> Callable[[str], tuple[Provider, PoolTarget]]:
    return lambda pool: (provider, PoolTarget(name=pool, template="tpl"))


async def _hang(seconds: float) -> None:
    await asyncio.Event().wait()


async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


async def _halt(worker: Worker, run: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Stop a worker at once, as a crash would: its loop and every handler in flight are cancelled,
    nothing is acked. (Also sets ``stop``: a cancelled run() was seen to keep looping once.)"""
    stop.set()
    run.cancel()
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not run.done() or worker._inflight:
        for task in list(worker._inflight.values()):
            task.cancel()
        await asyncio.wait([run, *worker._inflight.values()], timeout=0.05)
        assert loop.time() < end, "the worker did not stop"


def _types_for(log: Sequence[Recorded], vm: str) -> list[str]:
    return [r.type for r in log if r.vm == vm]


@pytest.mark.slow
async def test_killed_worker_mid_clone_is_reclaimed_and_the_vm_becomes_ready_once(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    slow = DummyProvider("dummy", redis, prefix=prefix, options={"createvm_max_time": 1}, sleep=_hang)
    fast = DummyProvider("dummy", redis, prefix=prefix, options={})
    target = PoolTarget(name=POOL)
    await cmds.configure(POOL, settings_(1, 1), META)
    (vm,) = in_state(await read_state(redis, keys, POOL), "cloning")

    a = Worker(
        redis,
        keys,
        Handlers(cmds, _targets(slow), worker="a", poll=(0.01, 0.05)),
        [POOL],
        consumer="a",
        reclaim_idle_ms=300,
    )
    stop_a = asyncio.Event()
    run_a = asyncio.create_task(a.run(stop_a, block_ms=50))
    await poll(lambda: slow.inspect(target, vm))  # A is inside create_vm
    await _halt(a, run_a, stop_a)  # A dies: nothing is acked
    pending = await redis.xpending_range(keys.stream(POOL), GROUP, min="-", max="+", count=10)
    assert [p["consumer"] for p in pending] == [b"a"]

    b = Worker(
        redis,
        keys,
        Handlers(cmds, _targets(fast), worker="b", poll=(0.01, 0.05)),
        [POOL],
        consumer="b",
        reclaim_idle_ms=300,
    )
    stop_b = asyncio.Event()
    run_b = asyncio.create_task(b.run(stop_b, block_ms=50))

    async def became_ready() -> bool:
        return "vm.ready" in _types_for(await read_log(redis, keys, POOL), vm)

    await poll(became_ready)
    await poll(lambda: _no_pending(redis, keys))
    await _stop(run_b, stop_b)
    log = await read_log(redis, keys, POOL)
    kinds = Counter(_types_for(log, vm))
    assert (kinds["vm.cloned"], kinds["vm.ready"]) == (1, 1)
    assert [r.event.worker for r in log if isinstance(r.event, ev.VmCloneStarted)] == ["a", "b"]
    assert await fast.list_vms(target) == [vm]
    assert (await read_state(redis, keys, POOL)).state == {vm: "ready"}


async def _no_pending(redis: aioredis.Redis, keys: Keys) -> bool:
    return not await redis.xpending_range(keys.stream(POOL), GROUP, min="-", max="+", count=10)


async def test_clone_reclaimed_after_a_hard_kill_finishes_the_vm(redis: aioredis.Redis, prefix: str) -> None:
    """Regression (fixed in a9d0792): the handler adopted any VM get_vm returned, so after a SIGKILL
    mid-create it logged vm.cloned for a VM the simulated provider would never finish."""
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    provider = DummyProvider("dummy", redis, prefix=prefix, options={})
    target = PoolTarget(name=POOL, template="tpl")
    await cmds.configure(POOL, settings_(1, 1), META)
    (vm,) = in_state(await read_state(redis, keys, POOL), "cloning")
    # What a SIGKILLed worker leaves behind: its clone started, the provider record half made.
    await cmds.append(POOL, [(vm, ev.VmCloneStarted(worker="dead"))], META)
    await redis.hset(f"{prefix}:sim:dummy:{{{POOL}}}:vms", vm, b'{"state":"cloning","template":"tpl"}')
    log = await read_log(redis, keys, POOL)
    handlers = Handlers(cmds, _targets(provider), worker="b")
    await handlers.handle(next(r for r in log if r.type == "vm.clone-requested"), deliveries=2)
    assert "vm.cloned" in _types_for(await read_log(redis, keys, POOL), vm)
    record = await provider.inspect(target, vm)
    assert isinstance(record, DummyVm)
    assert record.state == "running", "vm.cloned was logged for a VM the provider is still cloning"


@pytest.mark.slow
async def test_busy_live_worker_keeps_its_entries(redis: aioredis.Redis, prefix: str) -> None:
    """Regression (fixed in a9d0792): with every slot busy, Worker.step waited for a handler without
    a timeout, run() stopped heartbeating, and another worker reclaimed (and cloned again) the entry
    of a live worker after reclaim_idle_ms."""
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    slow = DummyProvider("dummy", redis, prefix=prefix, options={"createvm_max_time": 1}, sleep=_hang)
    await cmds.configure(POOL, settings_(1, 1), META)
    (vm,) = in_state(await read_state(redis, keys, POOL), "cloning")
    a = Worker(
        redis,
        keys,
        Handlers(cmds, _targets(slow), worker="a"),
        [POOL],
        consumer="a",
        concurrency=1,
        reclaim_idle_ms=200,
    )
    b = Worker(
        redis, keys, Handlers(cmds, _targets(slow), worker="b"), [POOL], consumer="b", reclaim_idle_ms=200
    )
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    run_a = asyncio.create_task(a.run(stop_a, block_ms=500))
    run_b: asyncio.Task[None] | None = None
    try:
        await poll(lambda: slow.inspect(PoolTarget(name=POOL), vm))  # A is busy cloning, its only slot
        run_b = asyncio.create_task(b.run(stop_b, block_ms=50))

        async def started_twice() -> bool:
            return sum(r.type == "vm.clone-started" for r in await read_log(redis, keys, POOL)) > 1

        with contextlib.suppress(AssertionError):  # B reclaims within ~idle + idle/3 if A is silent
            await poll(started_twice, within=4 * b.reclaim_idle_ms / 1000)
        log = await read_log(redis, keys, POOL)
        assert [r.event.worker for r in log if isinstance(r.event, ev.VmCloneStarted)] == ["a"]
    finally:
        await _halt(a, run_a, stop_a)
        if run_b is not None:
            await _halt(b, run_b, stop_b)


async def test_poisoned_entry_goes_to_dead_letters_after_max_deliveries(
    redis: aioredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    handlers = Handlers(cmds, _targets(DummyProvider("dummy", redis, prefix=prefix, options={})), worker="w")
    calls: list[tuple[str, int]] = []

    async def boom(r: Recorded, deliveries: int = 1) -> None:
        calls.append((r.position, deliveries))
        raise RuntimeError("handler bug")

    monkeypatch.setattr(handlers, "handle", boom)
    await cmds.configure(POOL, settings_(1, 1), META)
    (entry,) = [r for r in await read_log(redis, keys, POOL) if r.type == "vm.clone-requested"]
    worker = Worker(redis, keys, handlers, [POOL], consumer="w", reclaim_idle_ms=20, max_deliveries=3)
    await worker.setup()
    await worker.step()
    await worker.drain()

    async def dead_lettered() -> list[Any]:
        await worker.reclaim()
        await worker.drain()
        return await xrange(redis, keys.dead_letters(POOL))

    (dead,) = await poll(dead_lettered, every=0.03)
    fields = dead[1]
    assert fields[b"position"].decode() == entry.position
    assert (fields[b"type"], fields[b"vm"], fields[b"group"]) == (
        b"vm.clone-requested",
        entry.vm.encode(),
        b"workers",
    )
    assert int(fields[b"deliveries"]) == 3
    assert calls == [(entry.position, n) for n in (1, 2, 3)]
    assert await _no_pending(redis, keys)
    assert decode_entry(POOL, entry.position, fields).event == entry.event  # the entry is kept whole
    await worker.reclaim()
    assert await redis.xlen(keys.dead_letters(POOL)) == 1


# --- projections ---------------------------------------------------------------------------------


def _read_models(keys: Keys, pool: str) -> str:
    return f"{keys.base(pool)}:rm:*"


async def _lifecycle(
    redis: aioredis.Redis, keys: Keys, seed: int, steps: int, between: Callable[[], Awaitable[object]]
) -> History:
    h = History(redis, keys, POOL, Choose(rng=random.Random(seed)), seed=seed)
    await h.start()
    for i in range(steps):
        await h.step()
        if i % 17 == 0:
            await between()
    await h.cmds.configure(POOL, settings_(3, 3), META)  # end with a VM held by a token
    live = await read_state(redis, keys, POOL)
    await h.cmds.append(POOL, [(vm, ev.VmReady(boot_seconds=1.0)) for vm in in_state(live, "booting")], META)
    await make_ready(h.cmds, POOL, in_state(live, "cloning"))
    await h.cmds.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1, token_hash="h3", token_user="u"), META)
    extras: list[tuple[str, Event]] = []
    for vm in in_state(await read_state(redis, keys, POOL), *STATES)[:3]:
        extras += [
            (vm, ev.VmTagged(tags={"team": "ci"})),
            (vm, ev.VmDiskAdded(size_gb=8)),
            (vm, ev.VmSnapshotTaken(name="s1")),
            (vm, ev.VmMigrated(host="h9")),
        ]
    await h.cmds.append(POOL, extras, META)
    return h


@pytest.mark.slow
async def test_projection_rebuild_is_byte_identical(redis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    live = ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="live", batch=7)
    await _lifecycle(redis, keys, seed=11, steps=150, between=live.catch_up)
    await live.catch_up()
    log = await read_log(redis, keys, POOL)
    assert {"vm.checked-out", "vm.returned", "vm.destroyed", "vm.tagged"} <= {r.type for r in log}
    before = await dump(redis, _read_models(keys, POOL))
    assert any(":rm:token:t:" in k for k in before), "no token index to compare"
    assert {k.rsplit(":", 1)[-1] for k in before if k.endswith(":checkpoint")} == {"checkpoint"}

    rebuilt = ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="rebuild", batch=50)
    assert await rebuilt.rebuild() == len(rebuilt.projections) * len(log)
    assert await dump(redis, _read_models(keys, POOL)) == before

    for projection in live.projections:  # a redelivered batch (the last one, or an old one) is a no-op
        await live.apply(projection, POOL, log[-7:])
        await live.apply(projection, POOL, log[:10])
    assert await dump(redis, _read_models(keys, POOL)) == before


async def test_new_projection_holder_resumes_from_the_checkpoint(redis: aioredis.Redis, prefix: str) -> None:
    """A runner that read a batch and died before applying it: its successor applies it once."""
    keys = Keys(prefix)
    first = ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="first", batch=5)
    h = await _lifecycle(redis, keys, seed=3, steps=30, between=first.catch_up)
    await first.catch_up()
    await h.cmds.reset(POOL, META)
    for projection in first.projections:  # delivered to "first", never applied nor acked
        await redis.xreadgroup(first.group(projection), "first", {keys.stream(POOL): ">"}, count=3)
        await redis.delete(keys.lease(POOL, first.group(projection)))  # its lease lapses
    second = ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="second", batch=4)
    await second.catch_up()
    caught_up = await dump(redis, _read_models(keys, POOL))
    await ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="r").rebuild()
    assert await dump(redis, _read_models(keys, POOL)) == caught_up


async def test_overlapping_redelivered_batch_is_applied_once(redis: aioredis.Redis, prefix: str) -> None:
    """Regression (fixed in a9d0792): apply.lua compared only a batch's last position with the
    checkpoint, so a batch overlapping it (a holder whose lease lapsed mid-batch) applied its
    already-applied entries again."""
    keys = Keys(prefix)
    runner = ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="c")
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    await cmds.configure(POOL, settings_(3, 3), META)
    log = await read_log(redis, keys, POOL)
    await runner.renew()  # only a lease holder may write a read model
    for projection in runner.projections:
        await runner.apply(projection, POOL, log[:2])
        await runner.apply(projection, POOL, log)
    once = await dump(redis, _read_models(keys, POOL))
    await ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="r").rebuild()
    assert await dump(redis, _read_models(keys, POOL)) == once


async def test_rebuild_while_a_live_runner_holds_the_stream(
    redis: aioredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(prefix)
    live = ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="live")
    h = await _lifecycle(redis, keys, seed=5, steps=40, between=live.catch_up)
    await live.catch_up()
    await h.cmds.reset(POOL, META)  # new entries the live runner has not read yet
    cli = ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="cli")
    drop = cli.drop

    async def drop_then_live_step(projection: Any, pool: str) -> None:
        await drop(projection, pool)
        await live.step()  # the live reader happens to run while the rebuild is under way

    monkeypatch.setattr(cli, "drop", drop_then_live_step)
    await cli.rebuild()
    await live.catch_up()
    got = await dump(redis, _read_models(keys, POOL))
    monkeypatch.setattr(cli, "drop", drop)
    await cli.rebuild()
    assert got == await dump(redis, _read_models(keys, POOL))


async def test_releasing_a_lapsed_lease_leaves_the_new_holder_alone(
    redis: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:lease"
    a, b = Lease(redis, "a", 10_000), Lease(redis, "b", 10_000)
    assert await a.hold(key)
    await redis.delete(key)  # a's lease lapses ...
    assert await b.hold(key)  # ... and b takes it
    await a.release(key)  # a, not knowing, gives up "its" lease
    assert await redis.get(key) == b"b"


# --- refill and reconcile ------------------------------------------------------------------------


async def test_checkout_requests_the_replacement_in_the_same_step(redis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    await cmds.configure(POOL, settings_(2, 5), META)
    await make_ready(cmds, POOL, in_state(await read_state(redis, keys, POOL), "cloning"))
    mark = (await read_log(redis, keys, POOL))[-1].position
    (vm,) = await cmds.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), META)
    new = await read_log(redis, keys, POOL, after=mark)
    assert [(r.type, r.vm == vm) for r in new] == [("vm.checked-out", True), ("vm.clone-requested", False)]
    base = new[0].event_id.rsplit("-", 1)[0]
    assert [r.event_id for r in new] == [f"{base}-1", f"{base}-2"]  # one script call
    state = await read_state(redis, keys, POOL)
    assert (in_state(state, "running"), in_state(state, "cloning")) == ([vm], [new[1].vm])
    assert await redis.hget(keys.names(), new[1].vm) == POOL.encode()  # its name is reserved

    # a process with no spare reserved names: the replacement is the very next entry
    fresh = PoolCommands(redis, keys, clock=FakeClock())
    mark = new[-1].position
    (vm,) = await fresh.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), META)
    new = await read_log(redis, keys, POOL, after=mark)
    assert [(r.type, r.vm == vm) for r in new] == [("vm.checked-out", True), ("vm.clone-requested", False)]


async def test_empty_pool_checkout_hands_out_nothing_and_appends_nothing(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    await cmds.configure(POOL, settings_(2, 2), META)
    await make_ready(cmds, POOL, in_state(await read_state(redis, keys, POOL), "cloning")[:1])
    length = await redis.xlen(keys.stream(POOL))
    assert await cmds.checkout(POOL, 2, ev.VmCheckedOut(lifetime=1), META) == []  # all or none
    assert await redis.xlen(keys.stream(POOL)) == length


def _reconcile_setup(
    redis: aioredis.Redis, prefix: str
) -> tuple[Keys, FakeClock, PoolCommands, DummyProvider, PoolTarget]:
    keys, clock = Keys(prefix), FakeClock()
    return (
        keys,
        clock,
        PoolCommands(redis, keys, clock=clock),
        DummyProvider("dummy", redis, prefix=prefix, options={}),
        PoolTarget(name=POOL, template="tpl"),
    )


async def test_reconcile_destroys_a_vm_made_by_hand(redis: aioredis.Redis, prefix: str) -> None:
    keys, clock, cmds, provider, target = _reconcile_setup(redis, prefix)
    await cmds.configure(POOL, settings_(0, 0), META)
    await provider.create_vm(target, "by-hand")
    clock.now += SEC
    assert await cmds.reconcile(POOL, await provider.list_vms(target), clock.now, META) == (0, 1)
    worker = Worker(redis, keys, Handlers(cmds, _targets(provider), worker="w"), [POOL], consumer="w")
    await worker.setup()
    while await worker.step():
        await worker.drain()
    assert _types_for(await read_log(redis, keys, POOL), "by-hand") == [
        "vm.discovered",
        "vm.discarded",
        "vm.destroy-started",
        "vm.destroyed",
    ]
    assert await provider.list_vms(target) == []
    state = await read_state(redis, keys, POOL)
    assert (state.state, state.gone) == ({}, {"by-hand": clock.now})
    assert await cmds.reconcile(POOL, [], clock.now + SEC, META) == (0, 0)


async def test_reconcile_forgets_a_vm_deleted_by_hand(redis: aioredis.Redis, prefix: str) -> None:
    keys, clock, cmds, provider, target = _reconcile_setup(redis, prefix)
    await cmds.configure(POOL, settings_(1, 1), META)
    (vm,) = in_state(await read_state(redis, keys, POOL), "cloning")
    await provider.create_vm(target, vm)
    await make_ready(cmds, POOL, [vm])
    clock.now += SEC
    await provider.destroy_vm(target, vm)  # deleted behind our back
    assert await cmds.reconcile(POOL, await provider.list_vms(target), clock.now, META) == (1, 0)
    new = [r for r in await read_log(redis, keys, POOL) if r.at == clock.now]
    assert [(r.type, r.vm == vm) for r in new] == [("vm.vanished", True), ("vm.clone-requested", False)]
    assert new[0].event == ev.VmVanished(last_state="ready")
    state = await read_state(redis, keys, POOL)
    assert vm not in state.state
    assert state.gone[vm] == clock.now


async def test_reconcile_leaves_vms_that_changed_after_the_listing(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys, clock, cmds, provider, target = _reconcile_setup(redis, prefix)
    await cmds.configure(POOL, settings_(2, 2), META)
    young, old = in_state(await read_state(redis, keys, POOL), "cloning")
    await provider.create_vm(target, old)
    await make_ready(cmds, POOL, [old])
    clock.now += SEC
    listed_at = clock.now
    inventory = await provider.list_vms(target)  # before `young` exists in the provider
    assert inventory == [old]
    clock.now += SEC
    await provider.create_vm(target, young)
    await cmds.append(POOL, [(young, ev.VmCloned(seconds=1.0))], META)  # booting since after the listing
    await cmds.append(
        POOL, [(old, ev.VmDiscarded(reason="x")), (old, ev.VmDestroyStarted()), (old, ev.VmDestroyed())], META
    )  # gone after the listing
    await provider.destroy_vm(target, old)
    length = await redis.xlen(keys.stream(POOL))
    assert await cmds.reconcile(POOL, inventory, listed_at, META) == (0, 0)
    log = await read_log(redis, keys, POOL)
    assert not [r for r in log[length:] if r.vm in (young, old)]
    assert (await read_state(redis, keys, POOL)).state[young] == "booting"
    # the next listing sees both as they are, and nothing is left to converge
    clock.now += SEC
    assert await cmds.reconcile(POOL, await provider.list_vms(target), clock.now, META) == (0, 0)


async def test_reconcile_never_vanishes_a_vm_still_cloning(redis: aioredis.Redis, prefix: str) -> None:
    keys, clock, cmds, _, _ = _reconcile_setup(redis, prefix)
    await cmds.configure(POOL, settings_(1, 1), META)
    clock.now += HOUR
    assert await cmds.reconcile(POOL, [], clock.now, META) == (0, 0)
    assert in_state(await read_state(redis, keys, POOL), "cloning")


async def test_rebuild_state_beside_a_live_api_never_hands_out_a_running_vm(
    redis: aioredis.Redis, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    await cmds.configure(POOL, settings_(1, 1), META)
    await make_ready(cmds, POOL, in_state(await read_state(redis, keys, POOL), "cloning"))
    (running,) = await cmds.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), META)
    api_redis = aioredis.Redis.from_url(redis_url)
    api = PoolCommands(api_redis, keys, clock=FakeClock())
    handed: list[str] = []
    real_xrange = redis.xrange

    async def checkout_then_xrange(*args: Any, **kwargs: Any) -> Any:
        handed.extend(await api.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), Meta("api")))
        return await real_xrange(*args, **kwargs)

    monkeypatch.setattr(redis, "xrange", checkout_then_xrange)
    try:
        await cmds.rebuild_state(POOL, batch=1)
    finally:
        await api_redis.aclose()
    assert running not in handed
    check_log_invariants(await read_log(redis, keys, POOL))


# --- deadlines live ------------------------------------------------------------------------------


async def test_fire_due_appends_what_the_fold_predicts(redis: aioredis.Redis, prefix: str) -> None:
    keys, clock = Keys(prefix), FakeClock()
    cmds = PoolCommands(redis, keys, clock=clock)
    await cmds.configure(POOL, settings_(3, 3, ready_ttl=10, timeout=5), META)
    a, b, _ = in_state(await read_state(redis, keys, POOL), "cloning")  # the third stays cloning
    await make_ready(cmds, POOL, [a, b])
    (running,) = await cmds.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), META)
    clock.now += 30 * MIN
    await cmds.append(POOL, [(running, ev.VmLifetimeChanged(hours=2))], META)  # due at checkout + 2 h
    for at in (6 * MIN, 40 * MIN, 2 * HOUR + MIN):
        clock.now = T0 + at
        state = await read_state(redis, keys, POOL)
        predicted = fire(state, clock.now)
        mark = (await read_log(redis, keys, POOL))[-1].position
        await cmds.fire_due(POOL, META)
        fired = [r for r in await read_log(redis, keys, POOL, after=mark) if r.actor == META.actor]
        got = [(r.vm, r.type, ev.encode(r.event)) for r in fired if r.type != "vm.clone-requested"]
        assert got == [(vm, t, ev.encode(ev.decode_body(t, 1, body))) for vm, t, body in predicted]
        assert predicted, f"nothing due at +{at} ms"


async def _fired_retry(
    redis: aioredis.Redis, prefix: str, attempt: int = 2
) -> tuple[Keys, PoolCommands, str]:
    keys, clock = Keys(prefix), FakeClock()
    cmds = PoolCommands(redis, keys, clock=clock)
    await cmds.configure(POOL, settings_(1, 1), META)
    (vm,) = in_state(await read_state(redis, keys, POOL), "cloning")
    await cmds.append(
        POOL,
        [
            (vm, ev.VmCloneFailed(error="x")),
            (vm, ev.VmDestroyStarted()),
            (vm, ev.VmDestroyFailed(error="busy", attempt=attempt, retry_in=5.0)),
        ],
        META,
    )
    clock.now += 5 * SEC
    assert await cmds.fire_due(POOL, META) == 1
    return keys, cmds, vm


async def test_first_destroy_failure_is_retried_as_attempt_two(redis: aioredis.Redis, prefix: str) -> None:
    keys, _, vm = await _fired_retry(redis, prefix, attempt=1)
    (retry,) = [r for r in await read_log(redis, keys, POOL) if r.type == "vm.destroy-requested"]
    assert (retry.vm, retry.event) == (vm, ev.VmDestroyRequested(attempt=2))


async def test_fired_retry_carries_the_attempt(redis: aioredis.Redis, prefix: str) -> None:
    keys, _, vm = await _fired_retry(redis, prefix)
    (retry,) = [r for r in await read_log(redis, keys, POOL) if r.type == "vm.destroy-requested"]
    assert (retry.vm, retry.event) == (vm, ev.VmDestroyRequested(attempt=3))


async def test_fired_retry_replays_like_live(redis: aioredis.Redis, prefix: str) -> None:
    """Regression (fixed in a9d0792): fire_due.lua removed the fired member from 'due' and 'carry'
    outside apply; the fired vm.destroy-requested keeps the VM 'completed', so replay kept the
    deadline and a rebuilt pool fired the retry a second time."""
    keys, cmds, _ = await _fired_retry(redis, prefix)
    live = await dump_decision_keys(redis, keys, POOL)
    assert fold(await read_log(redis, keys, POOL)) == await read_state(redis, keys, POOL)
    await cmds.rebuild_state(POOL)
    assert await dump_decision_keys(redis, keys, POOL) == live
    assert await cmds.fire_due(POOL, META) == 0


async def test_gone_names_are_forgotten_the_same_way_live_and_replayed(
    redis: aioredis.Redis, prefix: str
) -> None:
    """Regression (fixed in a9d0792): reconcile.lua trimmed 'gone' by wall time outside apply, so
    rebuild_state brought forgotten names back."""
    keys, clock = Keys(prefix), FakeClock()
    cmds = PoolCommands(redis, keys, clock=clock)
    await cmds.configure(POOL, settings_(1, 1), META)
    (old,) = in_state(await read_state(redis, keys, POOL), "cloning")
    await cmds.append(POOL, [(old, ev.VmCloneFailed(error="x")), (old, ev.VmDestroyed())], META)
    clock.now += 25 * HOUR
    await cmds.reconcile(POOL, [], clock.now, META)
    (new,) = in_state(await read_state(redis, keys, POOL), "cloning")
    await cmds.append(POOL, [(new, ev.VmCloneFailed(error="x")), (new, ev.VmDestroyed())], META)
    assert (await read_state(redis, keys, POOL)).gone == {new: clock.now}  # `old` is forgotten
    live = await dump_decision_keys(redis, keys, POOL)
    await cmds.rebuild_state(POOL)
    assert await dump_decision_keys(redis, keys, POOL) == live


async def test_reverted_checkout_keeps_ready_plus_pending_within_size(
    redis: aioredis.Redis, prefix: str
) -> None:
    """Regression (fixed in a9d0792): a reverted checkout came back to ready after its replacement
    was requested, so ready + pending exceeded the size."""
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    await cmds.configure(POOL, settings_(1, 1), META)
    await make_ready(cmds, POOL, in_state(await read_state(redis, keys, POOL), "cloning"))
    (vm,) = await cmds.checkout(POOL, 1, ev.VmCheckedOut(lifetime=1), META)
    await cmds.append(POOL, [(vm, ev.VmCheckoutReverted())], META)
    check_log_invariants(await read_log(redis, keys, POOL))
