"""Delivery guarantees under lost replies and races (issue 9): a work item leaves the pending list
only when a handler finished it or it was dead-lettered; a projection applies every entry of its
stream once, in order, whatever replies are lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from commands.handlers import Handlers
from commands.pool import PoolCommands
from commands.worker import GROUP, Worker
from events import Keys, Recorded
from projectors import ALL_PROJECTIONS, ProjectionRunner
from projectors._tx import Tx
from projectors.pool_status import PoolStatus
from providers.dummy import DummyProvider
from tests.integration.test_store import (
    META,
    POOL,
    FakeClock,
    _lifecycle,
    _targets,
    dump,
    poll,
    read_log,
    settings_,
)


async def _pending(redis: aioredis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return list(await redis.xpending_range(keys.stream(POOL), GROUP, min="-", max="+", count=10))


async def test_an_item_another_worker_reclaimed_first_stays_pending(
    redis: aioredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers reclaim the same item: the loser's XCLAIM answers empty (the winner reset its idle
    time). The loser must leave it alone, so that when the winner dies it is reclaimed again."""
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    provider = DummyProvider("dummy", redis, prefix=prefix, options={})
    await cmds.configure(POOL, settings_(1, 1), META)
    handled: list[str] = []

    async def record(r: Recorded, deliveries: int = 1) -> None:
        handled.append(r.position)

    def worker(name: str) -> Worker:
        handlers = Handlers(cmds, _targets(provider), worker=name)
        monkeypatch.setattr(handlers, "handle", record)
        return Worker(redis, keys, handlers, [POOL], consumer=name, reclaim_idle_ms=60_000)

    a, b = worker("a"), worker("b")
    await a.setup()
    (clone,) = [r for r in await read_log(redis, keys, POOL) if r.type == "vm.clone-requested"]
    position = clone.position.encode()
    await redis.xreadgroup(GROUP, "dead", {keys.stream(POOL): ">"})  # a dead worker took them
    others = [p["message_id"] for p in await _pending(redis, keys) if p["message_id"] != position]
    await redis.xack(keys.stream(POOL), GROUP, *others)
    stale = await _pending(redis, keys)  # what A's XPENDING saw ...
    await redis.xclaim(keys.stream(POOL), GROUP, "b", 0, [position])  # ... before B claimed it

    async def listed_before_b_claimed() -> list[tuple[str, list[dict[str, Any]]]]:
        return [(POOL, stale)]

    with monkeypatch.context() as m:
        m.setattr(a, "_idle_entries", listed_before_b_claimed)
        assert await a.reclaim() == 0
    assert [(p["message_id"], p["consumer"]) for p in await _pending(redis, keys)] == [(position, b"b")]

    del b  # B dies holding it: after the idle time A takes it over and finishes it
    a.reclaim_idle_ms = 20

    async def reclaimed() -> bool:
        await a.reclaim()
        await a.drain()
        return bool(handled)

    await poll(reclaimed, every=0.03)
    assert handled == [position.decode()]
    assert await _pending(redis, keys) == []


class LoseReplies:
    """Lets Redis run the ``n``-th calls of ``commands`` on one client, then loses the reply (raises
    ``ConnectionError`` as a dropped connection would): the command took effect, the caller never
    learns how."""

    def __init__(self, client: aioredis.Redis, commands: set[str], lose: set[int]) -> None:
        self.commands, self.lose, self.calls, self.lost = commands, lose, 0, 0
        self._send, self._pipeline = client.execute_command, client.pipeline

    def _after(self, names: list[str], replies: list[Any]) -> None:
        if any(n in self.commands and r for n, r in zip(names, replies, strict=True)):
            self.calls += 1
            if self.calls in self.lose:
                self.lost += 1
                raise ConnectionError("reply lost (injected)")

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = await self._send(*args, **options)
        self._after([str(args[0]).upper()], [reply])
        return reply

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._pipeline(*args, **kwargs)
        send = pipe.execute

        async def execute(raise_on_error: bool = True) -> list[Any]:
            names = [str(command[0]).upper() for command, _ in pipe.command_stack]
            replies = await send(raise_on_error=raise_on_error)
            self._after(names, replies)
            return replies

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe

    def install(self, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(client, "execute_command", self.execute_command)
        monkeypatch.setattr(client, "pipeline", self.pipeline)


async def test_projections_apply_every_entry_once_when_replies_are_lost(
    redis: aioredis.Redis, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lost replies to the runner's reads and to its apply script: the live read models still equal
    a rebuild from the log, and nothing is left pending in the projections' groups."""
    keys = Keys(prefix)
    client = aioredis.Redis.from_url(redis_url)
    lossy = LoseReplies(client, {"XRANGE", "XREAD", "XREADGROUP", "EVALSHA"}, lose={2, 5, 9})
    lossy.install(client, monkeypatch)
    runner = ProjectionRunner(client, keys, ALL_PROJECTIONS(), [POOL], consumer="live", batch=5)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, block_ms=20))
    try:
        await _lifecycle(redis, keys, seed=7, steps=60, between=lambda: asyncio.sleep(0.01))
        last = (await redis.xrevrange(keys.stream(POOL), count=1))[0][0]

        async def caught_up() -> bool:
            marks = [await redis.get(runner.checkpoint_key(p, POOL)) for p in runner.projections]
            return marks == [last] * len(marks)

        await poll(caught_up, within=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
    assert lossy.lost == 3
    for projection in runner.projections:
        summary = await redis.xpending(keys.stream(POOL), runner.group(projection))
        assert summary["pending"] == 0
    live = await dump(redis, f"{keys.base(POOL)}:rm:*")
    await ProjectionRunner(redis, keys, ALL_PROJECTIONS(), [POOL], consumer="r").rebuild()
    assert await dump(redis, f"{keys.base(POOL)}:rm:*") == live


class Flaky(PoolStatus):
    """The status projection, failing its first ``failures`` batches of pool ``bad``."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        if pool == "bad" and self.failures > 0:
            self.failures -= 1
            raise RuntimeError("injected fold failure")
        await super().apply(keys, pool, batch, tx)


async def test_a_batch_that_fails_is_retried_loudly_and_holds_up_no_other_pool(
    redis: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    flaky = Flaky(failures=2)
    runner = ProjectionRunner(redis, keys, [flaky], ["bad", "good"], consumer="r")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, block_ms=20))
    try:
        await cmds.configure("bad", settings_(1, 1), META)
        await cmds.configure("good", settings_(1, 1), META)

        async def applied(pool: str) -> bool:
            last = (await redis.xrevrange(keys.stream(pool), count=1))[0][0]
            return bool(await redis.get(runner.checkpoint_key(flaky, pool)) == last)

        await poll(lambda: applied("good"), within=0.9)  # not held up by the second it waits on "bad"
        await poll(lambda: applied("bad"), within=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert flaky.failures == 0
    assert sum("projection status cannot apply bad" in r.getMessage() for r in caplog.records) == 2
