"""Retention: archiving the old part of a log moves only what every reader is done with, and the
whole log stays readable (rebuilds and audits) from the archive plus what is left in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import events as ev
from commands.retention import archive_log
from events import Keys
from events.archive import ArchiveError, log_batches
from projectors import ALL_PROJECTIONS, ProjectionRunner
from projectors.audit import AuditLog
from tests.integration._api import SEED, ApiEnv, api_env, make_settings
from tests.integration.test_store import dump, dump_decision_keys

POOLS = [{"name": "pool1", "size": 3}]
FUTURE = 4_102_444_800_000  # 2100-01-01: "everything so far"


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, make_settings(POOLS)) as env:
        vms = await env.seed("pool1", 3)
        await env.commands.checkout("pool1", 1, ev.VmCheckedOut(lifetime=2), SEED)
        await env.commands.append("pool1", [(vms[1], ev.VmTagged(tags={"team": "ci"}))], SEED)
        await env.project()
        yield env


def checkpoints(api: ApiEnv) -> list[str]:
    return [api.runner.checkpoint_key(p, "pool1") for p in api.runner.projections]


def decision_state(keys: Keys, redis: aioredis.Redis) -> object:
    return dump_decision_keys(redis, keys, "pool1")


async def read_models(api: ApiEnv) -> dict[str, object]:
    return await dump(api.redis, f"{api.keys.base('pool1')}:rm:*", lambda k: k.endswith(":checkpoint"))


async def test_archive_moves_the_log_and_rebuilds_read_it_back(api: ApiEnv, tmp_path: Path) -> None:
    audit = AuditLog(api.redis, api.keys)
    before_log = [r async for r in audit.for_pool("pool1")]
    vm = before_log[-1].vm
    before_vm = await audit.for_vm(vm)
    before_state = await dump_decision_keys(api.redis, api.keys, "pool1")
    before_models = await read_models(api)

    done = await archive_log(
        api.redis, api.keys, "pool1", tmp_path, before_ms=FUTURE, checkpoints=checkpoints(api)
    )
    assert done.entries == len(before_log)
    assert done.through == before_log[-1].position
    assert await api.redis.xlen(api.keys.stream("pool1")) == 0
    assert [p.name for p in (tmp_path / "pool1").iterdir()] == [
        f"{before_log[0].position}_{before_log[-1].position}.jsonl.gz"
    ]

    # the stream alone is no longer the whole log: rebuilds refuse to guess
    with pytest.raises(ArchiveError, match="--archive"):
        await api.commands.rebuild_state("pool1")
    runner = ProjectionRunner(api.redis, api.keys, ALL_PROJECTIONS(), ["pool1"], consumer="rebuild")
    with pytest.raises(ArchiveError):
        await runner.rebuild()
    assert await read_models(api) == before_models  # nothing was dropped by the refused rebuild

    # with the archive they give back exactly what there was
    assert await api.commands.rebuild_state("pool1", archive=tmp_path) == 0
    state = await dump_decision_keys(api.redis, api.keys, "pool1")
    assert state.pop(api.keys.archived("pool1")) == ("string", before_log[-1].position.encode())
    assert state == before_state
    assert await runner.rebuild(tmp_path) == len(before_log) * len(runner.projections)
    assert await read_models(api) == before_models

    # audits too
    archived = AuditLog(api.redis, api.keys, archive=tmp_path)
    assert [r async for r in archived.for_pool("pool1")] == before_log
    assert await archived.for_vm(vm) == before_vm
    assert [
        r.position
        async for r in archived.for_pool("pool1", since_ms=int(before_log[-1].position.split("-")[0]))
    ] == [r.position for r in before_log if r.position.split("-")[0] == before_log[-1].position.split("-")[0]]

    # later events land in the stream and are read after the archive; a second archive appends
    await api.commands.append("pool1", [(vm, ev.VmTagged(tags={"after": "archive"}))], SEED)
    more = await api.redis.xlen(api.keys.stream("pool1"))
    assert more == 1
    batches = [b async for b in log_batches(api.redis, api.keys, "pool1", batch=2, archive=tmp_path)]
    assert sum(len(b) for b in batches) == len(before_log) + more
    await api.project()
    again = await archive_log(
        api.redis, api.keys, "pool1", tmp_path, before_ms=FUTURE, checkpoints=checkpoints(api)
    )
    assert again.entries == more
    assert len(list((tmp_path / "pool1").iterdir())) == 2
    assert await api.commands.rebuild_state("pool1", archive=tmp_path) == 0


async def test_archive_never_moves_what_a_reader_still_needs(api: ApiEnv, tmp_path: Path) -> None:
    log = [r async for r in AuditLog(api.redis, api.keys).for_pool("pool1")]
    stream = api.keys.stream("pool1")

    # a projection that never folded this pool holds everything back
    missing = [*checkpoints(api), f"{api.keys.read_model('pool1', 'future')}:checkpoint"]
    held = await archive_log(api.redis, api.keys, "pool1", tmp_path, before_ms=FUTURE, checkpoints=missing)
    assert (held.entries, held.through) == (0, "")
    assert "future" in held.held_back_by

    # so does an entry delivered to a worker and not acknowledged yet
    await api.redis.xgroup_create(stream, "workers", id="0-0")
    await api.redis.xreadgroup("workers", "w1", {stream: ">"}, count=4)
    await api.redis.xack(stream, "workers", log[0].position, log[1].position)
    held = await archive_log(
        api.redis, api.keys, "pool1", tmp_path, before_ms=FUTURE, checkpoints=checkpoints(api)
    )
    assert (held.entries, held.through) == (2, log[1].position)
    assert "unacknowledged" in held.held_back_by

    # and the time asked for
    cut = int(log[-1].position.split("-")[0])
    await api.redis.xack(stream, "workers", *[r.position for r in log])
    await api.redis.xreadgroup("workers", "w1", {stream: ">"})
    await api.redis.xack(stream, "workers", *[r.position for r in log])
    timed = await archive_log(
        api.redis, api.keys, "pool1", tmp_path, before_ms=cut, checkpoints=checkpoints(api)
    )
    assert all(int(r.position.split("-")[0]) < cut for r in log[: 2 + timed.entries])
    assert await api.redis.xlen(stream) == len(log) - 2 - timed.entries
