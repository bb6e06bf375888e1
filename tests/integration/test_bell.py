"""The bell-driven readers (``events.bell``): a process subscribes once, reads just the streams
that rang, and sweeps every stream when its subscription (re)starts, so a lost bell loses nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from commands.handlers import Handlers
from commands.pool import PoolCommands
from commands.worker import Worker
from events import Keys, Recorded
from events.bell import Bell
from projectors.audit import AuditLog
from providers.dummy import DummyProvider
from tests.integration.test_store import META, FakeClock, _targets, poll, settings_
from vmpooler.redis_server import RedisServer


class Sent:
    """Records the commands a client's pipelines send (the readers' reads go through pipelines)."""

    def __init__(self, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[tuple[Any, ...]] = []
        make = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make(*args, **kwargs)
            send = pipe.execute

            async def execute(raise_on_error: bool = True) -> list[Any]:
                self.commands += [command for command, _ in pipe.command_stack]
                return await send(raise_on_error=raise_on_error)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        monkeypatch.setattr(client, "pipeline", pipeline)

    def streams_read(self, command: str) -> list[str]:
        """The stream keys of every ``command`` sent (one stream per command)."""
        return [_text(c[-2]) for c in self.commands if _text(c[0]).upper() == command]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_a_worker_reads_only_the_streams_that_rang(
    redis: aioredis.Redis, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(prefix)
    pools = [f"p{i}" for i in range(300)]
    client = aioredis.Redis.from_url(redis_url)
    sent = Sent(client, monkeypatch)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    handled: list[Recorded] = []

    async def record(r: Recorded, deliveries: int = 1) -> None:
        handled.append(r)

    handlers = Handlers(cmds, _targets(DummyProvider("dummy", redis, prefix=prefix, options={})), worker="w")
    monkeypatch.setattr(handlers, "handle", record)
    bell = Bell(client, keys.bell(), sweep_s=3600)
    other = bell.listen([])  # another reader of the process: the subscription is up already
    await asyncio.wait_for(bell.subscribed.wait(), 10)
    worker = Worker(client, keys, handlers, pools, consumer="w", bell=bell, concurrency=500)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, block_ms=50))
    try:
        await poll(lambda: _true(len(sent.streams_read("XREADGROUP")) >= len(pools)))  # the first read
        swept = len(sent.commands)
        await cmds.configure("p7", settings_(1, 1), META)  # appends to p7's stream, rings its bell
        await poll(lambda: _true(any(r.type == "vm.clone-requested" for r in handled)))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await bell.forget(other)
        await client.aclose()
    assert sorted(sent.streams_read("XREADGROUP")[: len(pools)]) == sorted(keys.stream(p) for p in pools)
    after = [_text(c[-2]) for c in sent.commands[swept:] if _text(c[0]).upper() == "XREADGROUP"]
    assert set(after) == {keys.stream("p7")}, "read streams that did not ring"


async def _true(value: bool) -> bool:
    return value


async def _true_after(redis: aioredis.Redis, ms: int) -> bool:
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000 > ms


async def test_a_bell_lost_while_unsubscribed_is_covered_by_the_sweep(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    streams = [keys.stream("a"), keys.stream("b")]
    bell = Bell(redis, keys.bell(), sweep_s=3600, retry_s=0.05)
    listener = bell.listen(streams)
    try:
        await asyncio.wait_for(bell.subscribed.wait(), 10)
        assert await listener.wait(0) == set(streams)  # the first read, and the start's sweep
        assert await listener.wait(0) == set()
        await redis.publish(keys.bell(), streams[0])
        assert await listener.wait(5) == {streams[0]}
        for client in await redis.client_list(_type="pubsub"):  # the subscription dies ...
            await redis.client_kill_filter(_id=client["id"])
        await poll(lambda: _true(not bell.subscribed.is_set()))
        await asyncio.wait_for(bell.subscribed.wait(), 10)  # ... and comes back with a sweep
        assert await listener.wait(5) == set(streams)
    finally:
        await bell.forget(listener)


async def test_audit_follow_prints_what_is_appended_to_any_followed_pool(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys, clock=FakeClock())
    await cmds.configure("old", settings_(1, 1), META)
    since = int((await redis.xrevrange(keys.stream("old"), count=1))[0][0].split(b"-")[0]) + 1
    await poll(lambda: _true_after(redis, since))  # what comes next is appended after ``since``
    follow = AuditLog(redis, keys).follow(["old", "new"], since_ms=since)
    first = asyncio.ensure_future(anext(follow))
    await cmds.configure("new", settings_(2, 2), META)
    got = [await asyncio.wait_for(first, 10)]
    while len(got) < 3:  # pool.configured and two clone requests
        got.append(await asyncio.wait_for(anext(follow), 10))
    await follow.aclose()
    assert [(r.stream, r.type) for r in got] == [
        ("new", "pool.configured"),
        ("new", "vm.clone-requested"),
        ("new", "vm.clone-requested"),
    ]


async def test_audit_follow_outlives_a_redis_restart_and_misses_nothing(prefix: str) -> None:
    keys = Keys(prefix)
    server = RedisServer(appendonly=True).start()
    client = aioredis.Redis.from_url(server.url)
    try:
        cmds = PoolCommands(client, keys, clock=FakeClock())
        await cmds.configure("p", settings_(0, 1), META)
        follow = AuditLog(client, keys).follow(["p"], since_ms=0, give_up_after_s=60, check_every_s=0.2)
        assert (await asyncio.wait_for(anext(follow), 10)).type == "pool.configured"
        server.kill()
        nxt = asyncio.ensure_future(anext(follow))  # raises if the follower gives up on Redis
        server.start()  # same port and data dir: restarted from its AOF
        await poll(lambda: _appended(cmds))
        got = await asyncio.wait_for(nxt, 20)
        assert got.type == "pool.reset"
        await follow.aclose()
    finally:
        await client.aclose()
        server.stop()


async def _appended(cmds: PoolCommands) -> bool:
    try:
        await cmds.reset("p", META)
    except aioredis.ConnectionError:
        return False
    return True
