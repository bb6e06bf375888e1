"""Schemathesis over the served OpenAPI document: every operation, fuzzed with a bounded number of
examples (schema-valid and schema-violating parameters, plus random JSON bodies for POST/PUT), never
answers 5xx, and a request that was rejected (4xx) changed nothing.

The one 5xx allowed is the one vmpooler documents: 503 ``{"ok": false}`` where the operation's schema
lists 503 (no capacity). Failures are collected over all operations and reported together, each with
a curl reproducer.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from commands.pool import PoolCommands
from commands.tokens import Tokens
from events import CONTROL, Keys
from projectors import ALL_PROJECTIONS, OndemandStatus, ProjectionRunner
from tests.integration._api import ApiEnv, FakeClock, app_deps, make_settings
from web.app import create_app

SETTINGS = make_settings(
    [
        {"name": "pool1", "size": 4, "alias": ["poolone"], "dns_plugin": "example"},
        {"name": "empty", "size": 0},
    ],
    auth={"provider": "dummy"},
    config={"experimental_features": True, "vm_lifetime_auth": 2},
)
EXAMPLES = 12  # per operation and mode: about 40 operations x 3 strategies stay well under a minute
SKIP = {("GET", "/dashboard/events")}  # server-sent events: a stream that does not end
BASIC = {"Authorization": "Basic YWxpY2U6czNjcjN0"}  # alice:s3cr3t (dummy auth)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 200)
    | st.text(max_size=8)
    | st.sampled_from(["1", "pool1", "0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
json_bodies = st.dictionaries(
    st.sampled_from(["pool1", "poolone", "empty", "nosuch", "lifetime", "tags"]), json_values
)


@dataclass
class Target:
    app: Litestar
    keys: Keys
    sync: redis.Redis
    vms: list[str]
    token: str

    def snapshot(self) -> list[Any]:
        """What a rejected request must leave alone: logs (but for the record of a refused attempt,
        ``*.refused``), decision state, names, tokens."""
        pipe = self.sync.pipeline(transaction=False)
        for pool in SETTINGS.pool_names:
            pipe.xrange(self.keys.stream(pool))
            pipe.hgetall(self.keys.state(pool))
            pipe.hgetall(self.keys.config(pool))
        pipe.xrange(self.keys.control_stream())
        pipe.hgetall(self.keys.names())
        pipe.hgetall(self.keys.tokens())
        return [_unrefused(reply) if isinstance(reply, list) else reply for reply in pipe.execute()]


def _unrefused(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[bytes]:
    return [position for position, fields in entries if not fields[b"type"].endswith(b".refused")]


async def _seed(redis_url: str, keys: Keys, clock: FakeClock) -> tuple[list[str], str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        runner = ProjectionRunner(client, keys, ALL_PROJECTIONS(), list(SETTINGS.pool_names), consumer="fuzz")
        commands = PoolCommands(client, keys, clock=clock)
        env = ApiEnv(cast("Any", None), client, keys, SETTINGS, commands, clock, runner)
        await env.seed("empty", 0)
        vms = await env.seed("pool1", 4)
        return vms, await Tokens(client, keys, clock).create("alice")
    finally:
        await client.aclose()


class Projectors(threading.Thread):
    """The projectors on their own loop, as in a running service: the API's reads wait for them
    (read-your-writes), so without them every read of a fresh write would wait out its timeout."""

    def __init__(self, redis_url: str, keys: Keys) -> None:
        super().__init__(daemon=True)
        self.redis_url, self.keys = redis_url, keys
        self.started_loop = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url)
        pools = list(SETTINGS.pool_names)
        runners = [
            ProjectionRunner(client, self.keys, ALL_PROJECTIONS(), pools, consumer="fuzz-run"),
            ProjectionRunner(client, self.keys, [OndemandStatus()], [*pools, CONTROL], consumer="fuzz-run"),
        ]
        self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
        self.started_loop.set()
        try:
            await asyncio.gather(*(runner.run(self.stop_event, block_ms=50) for runner in runners))
        finally:
            await client.aclose()

    def close(self) -> None:
        self.started_loop.wait(timeout=10)
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.join(timeout=10)


@pytest.fixture(scope="module")
def target(redis_url: str) -> Iterator[Target]:
    keys, clock = Keys(f"fuzz{uuid.uuid4().hex[:10]}"), FakeClock()
    vms, token = asyncio.run(_seed(redis_url, keys, clock))
    app_redis = aioredis.Redis.from_url(redis_url)
    deps = app_deps(SETTINGS, app_redis, keys, clock)
    sync = redis.Redis.from_url(redis_url)
    projectors = Projectors(redis_url, keys)
    projectors.start()
    try:
        yield Target(create_app(deps), keys, sync, vms, token)
    finally:
        projectors.close()
        for key in sync.scan_iter(match=f"{keys.prefix}:*"):
            sync.delete(key)
        sync.close()


def _strategies(operation: Any, target: Target) -> st.SearchStrategy[tuple[Any, Any, bool]]:
    """Schema-valid and schema-violating cases, valid ones aimed at real VMs, random JSON bodies for
    POST/PUT, each sent with or without a valid token."""
    options: list[st.SearchStrategy[Any]] = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    names = {p.name for p in operation.path_parameters}
    if "hostname" in names:
        options.append(
            st.sampled_from(target.vms).flatmap(
                lambda vm: operation.as_strategy(path_parameters={"hostname": vm})
            )
        )
    body = json_bodies if operation.method.upper() in {"POST", "PUT"} else st.none()
    return st.tuples(st.one_of(options), body | st.none(), st.booleans())


def _not_ok(content: bytes) -> bool:
    try:
        decoded = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return False
    return isinstance(decoded, dict) and decoded.get("ok") is False


def _check(target: Target, operation: Any, drawn: tuple[Any, Any, bool], failures: list[str]) -> None:
    case, body, with_token = drawn
    before = target.snapshot()
    headers: dict[str, str] = {"X-AUTH-TOKEN": target.token} if with_token else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["data"] = msgspec.json.encode(body)
        headers["Content-Type"] = "application/json"
    if case.path.startswith("/api/v3/token") and (with_token or case.method.upper() == "GET"):
        headers.update(BASIC)
    response = case.call(**kwargs)
    status = response.status_code
    documented = str(status) in operation.definition.raw.get("responses", {})
    no_capacity = status == 503 and documented and _not_ok(response.content)
    where = f"{status} {case.method} {case.formatted_path} body={body!r}\n  {case.as_curl_command()}"
    if status >= 500 and not no_capacity:
        failures.append(f"5xx: {where}\n  {response.content[:300]!r}")
    elif 400 <= status < 500 and target.snapshot() != before:
        failures.append(f"a rejected request changed state: {where}")


def _fuzz(operation: Any, target: Target, failures: list[str]) -> None:
    @settings(
        max_examples=EXAMPLES * 3,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=_strategies(operation, target))
    def fuzz(drawn: tuple[Any, Any, bool]) -> None:
        _check(target, operation, drawn, failures)

    fuzz()


def test_every_operation_answers_without_5xx_and_rejections_change_nothing(target: Target) -> None:
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", target.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        operations += 1
        _fuzz(operation, target, failures)
    assert operations >= 30, "the schema lost operations"
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(dict.fromkeys(failures))
