"""Clone storms (issue 10): a pool whose provider fails every clone backs off, in Redis, across workers.

Two workers (two ``Handlers``, two provider instances) and a manager share one pool over real Redis. Time is
a fake clock driving the decisions, the manager's deadlines and the workers' back-off waits; every simulated
second the manager ticks and the workers run until each handler in flight is parked on the fake clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

import events as ev
from commands.backoff import CloneBackoff
from commands.handlers import Handlers
from commands.manager import Manager
from commands.pool import Meta, PoolCommands
from commands.provider import PoolTarget, Provider
from commands.worker import Worker
from events import Keys, Recorded, decode_entry
from events.streams import xrange
from providers.dummy import DummyProvider

POOL = "storm"
SIZE = CLONE_LIMIT = 5
BASE_S, CAP_S = 1.0, 60.0
T0 = 1_700_000_000_000


class FakeTime:
    """The decision clock (ms) and a pause that returns when that clock has passed its end."""

    def __init__(self) -> None:
        self.now = T0
        self.parked: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self) -> int:
        return self.now

    async def pause(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.parked.append((self.now + round(seconds * 1000), wake))
        try:
            await wake
        finally:
            self.parked = [(t, f) for t, f in self.parked if f is not wake]

    def advance(self, ms: int) -> None:
        self.now += ms
        for until, wake in self.parked:
            if until <= self.now and not wake.done():
                wake.set_result(None)


class Cloud:
    """One pool over a shared simulated cloud whose clones fail while ``down``."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.time = FakeTime()
        self.cmds = PoolCommands(redis, self.keys, clock=self.time)
        self.down = True
        self.workers = [self._worker(redis, prefix, name) for name in ("a", "b")]
        settings = ev.PoolConfigured(
            size=SIZE, template="t", clone_limit=CLONE_LIMIT, ready_ttl=0, timeout=15
        )
        self.manager = Manager(self.cmds, self.keys, {POOL: settings}, self._targets(None), holder="m")

    def _targets(self, provider: Provider | None) -> Callable[[str], tuple[Provider, PoolTarget]]:
        def target(pool: str) -> tuple[Provider, PoolTarget]:
            knobs = {"createvm_fail_percent": 100 if self.down else 0}
            assert provider is not None or pool == POOL
            return provider or self.workers[0].handlers.targets(pool)[0], PoolTarget(name=pool, options=knobs)

        return target

    def _worker(self, redis: aioredis.Redis, prefix: str, name: str) -> Worker:
        provider = DummyProvider("dummy", redis, prefix=prefix, options={})
        backoff = CloneBackoff(redis, self.keys, base_s=BASE_S, cap_s=CAP_S, clock=self.time)
        handlers = Handlers(
            self.cmds, self._targets(provider), worker=name, backoff=backoff, pause=self.time.pause
        )
        return Worker(redis, self.keys, handlers, [POOL], consumer=name, concurrency=50)

    async def start(self) -> None:
        await self.manager.configure()
        for w in self.workers:
            await w.setup()

    async def settle(self) -> None:
        """Run the workers until no entry is waiting and every handler in flight is parked."""
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while True:
            started = sum([await w.step() for w in self.workers])
            busy = sum(w.busy for w in self.workers)
            if not started and busy == len(self.time.parked):
                return
            assert loop.time() < end, "the workers never settled: clones keep coming"
            await asyncio.sleep(0.002)

    async def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.time.advance(1000)
            await self.manager.tick()
            await self.settle()

    async def log(self) -> list[Recorded]:
        return [decode_entry(POOL, p, f) for p, f in await xrange(self.redis, self.keys.stream(POOL))]

    async def stop(self) -> None:
        for w in self.workers:
            w.handlers.stop()
            for task in list(w._inflight.values()):
                task.cancel()
            await asyncio.gather(*w._inflight.values(), return_exceptions=True)


@pytest.fixture
async def cloud(redis: aioredis.Redis, prefix: str) -> Cloud:
    made = Cloud(redis, prefix)
    await made.start()
    yield made  # type: ignore[misc]
    await made.stop()


OUTAGE_MINUTES = 8
EVENTS_BOUND = 1 + SIZE + 5 * (CLONE_LIMIT + 6 + OUTAGE_MINUTES)
"""docs/architecture.md §8: pool.configured and the first clone requests; then 5 events per failed clone
(started, failed, destroy started, destroyed, the replacement's request): the clones in flight when the
outage began, the probes of the first minute (1, 2, 4, ... 32 s apart) and one probe per minute after."""


async def test_an_outage_of_eight_minutes_leaves_a_small_log(cloud: Cloud) -> None:
    await cloud.run(OUTAGE_MINUTES * 60)
    log = await cloud.log()
    kinds = Counter(r.type for r in log)
    assert len(log) <= EVENTS_BOUND, kinds
    assert len({r.vm for r in log if r.vm}) <= SIZE + CLONE_LIMIT + 6 + OUTAGE_MINUTES
    starts = sorted(r.at for r in log if r.type == "vm.clone-started")
    probes = [t - T0 for t in starts[CLONE_LIMIT:]]
    # one probe per period, periods doubling from 1 s to the 60 s cap
    assert [b - a for a, b in itertools.pairwise(probes)] == [2000, 4000, 8000, 16000, 32000] + [60000] * 6
    # the pool stays at its size: the clones waiting out the back-off are still `cloning`
    assert await cloud.redis.zcard(cloud.keys.in_state(POOL, "cloning")) == SIZE


async def test_the_first_clone_after_recovery_releases_the_others(cloud: Cloud) -> None:
    await cloud.run(3 * 60)
    cloud.down = False
    waited = 0
    while await cloud.redis.zcard(cloud.keys.in_state(POOL, "ready")) < SIZE:
        assert waited <= CAP_S + 5, "clones still held after the provider recovered"
        await cloud.run(1)
        waited += 1
    assert not await cloud.redis.exists(cloud.workers[0].handlers.backoff.key(POOL))


async def test_the_back_off_respects_an_open_circuit_breaker(redis: aioredis.Redis, prefix: str) -> None:
    pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")
    from providers.vsphere import VsphereProvider

    keys, time = Keys(prefix), FakeTime()
    cmds = PoolCommands(redis, keys, clock=time)
    vsphere = VsphereProvider("vsphere", {"server": "127.0.0.1", "port": 1, "circuit_breaker_timeout": 45})
    try:
        assert vsphere.breaker is not None
        for _ in range(vsphere.breaker.failure_threshold):
            vsphere.breaker.record_failure()
        settings = ev.PoolConfigured(size=1, template="t", clone_limit=1, ready_ttl=0, timeout=15)
        await cmds.configure(POOL, settings, Meta("test"))
        (request,) = [
            decode_entry(POOL, p, f)
            for p, f in await xrange(redis, keys.stream(POOL))
            if f[b"type"] == b"vm.clone-requested"
        ]
        backoff = CloneBackoff(redis, keys, clock=time)
        handlers = Handlers(cmds, lambda pool: (vsphere, PoolTarget(name=pool)), worker="w", backoff=backoff)
        await handlers.handle(request)
        time.advance(44_000)
        assert not (await backoff.admit(POOL)).go  # 1 s would be the first period; the breaker asks 45 s
        time.advance(1_000)
        assert (await backoff.admit(POOL)).probe
    finally:
        await vsphere.close()
