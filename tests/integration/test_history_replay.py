"""Replay equals live for the history projection, on random pool histories (days of fake time, so
buckets are retired), folded live in random batches and then rebuilt from the log in one go."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from events import Keys
from projectors import ProjectionRunner
from projectors.history import History, HistoryState
from tests.integration.test_store import POOL, Choose, _sub, in_state, read_state
from tests.integration.test_store import History as RandomHistory


async def dump(redis: aioredis.Redis, keys: Keys) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    async for key in redis.scan_iter(match=f"{keys.read_model(POOL, History.name)}*"):
        if key.endswith(b":checkpoint"):
            continue
        out[key] = await (redis.hgetall(key) if await redis.type(key) == b"hash" else redis.get(key))
    return out


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: a failure prints its draws
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), seed=st.integers(0, 2**32))
async def test_history_rebuild_equals_live(
    redis: aioredis.Redis, prefix: str, data: st.DataObject, seed: int
) -> None:
    keys = _sub(prefix)
    pool_history = RandomHistory(redis, keys, POOL, Choose(data=data), seed=seed)
    projection = History(minute_hours=2, hour_days=1)
    live = ProjectionRunner(
        redis, keys, [projection], [POOL], consumer="live", batch=data.draw(st.integers(1, 7))
    )
    await pool_history.start()
    for _ in range(40):
        await pool_history.step()
        if data.draw(st.booleans()):
            await live.catch_up()
    await live.catch_up()
    raw = await redis.get(History.state_key(keys, POOL))
    gauges = msgspec.json.decode(raw, type=HistoryState)
    state = await read_state(redis, keys, POOL)
    assert (gauges.ready, gauges.running) == (len(in_state(state, "ready")), len(in_state(state, "running")))
    before = await dump(redis, keys)
    minute_buckets = [k for k in before if b":history:m:" in k]
    assert len(minute_buckets) <= 2  # retention: at most two hours of minute points
    rebuild = ProjectionRunner(redis, keys, [projection], [POOL], consumer="rebuild", batch=500)
    await rebuild.rebuild()
    assert await dump(redis, keys) == before
