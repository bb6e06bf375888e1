"""Helpers for the API tests: settings from a dict, pools seeded through ``PoolCommands``, the app
under ``litestar.testing.AsyncTestClient``, projections caught up on demand.

Litestar's test client runs the app in a portal thread with its own event loop, so the app gets its
own Redis client (made and closed in that loop); the test side seeds and inspects Redis with the
session's ``redis`` fixture. Both share the test's unique key prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from commands.pool import Meta, PoolCommands
from commands.settings import Settings
from events import Event, Keys, PoolConfigured, Recorded, VmCloned, VmReady, decode_entry
from projectors import ALL_PROJECTIONS, ProjectionRunner, ReadModels
from vmpooler.config import parse_settings
from web.app import ApiDeps, create_app

__all__ = ["DOMAIN", "T0", "ApiEnv", "FakeClock", "api_env", "app_deps", "body", "make_settings"]

DOMAIN = "example.com"
T0 = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
SEED = Meta("test-seed", "seed")


def make_settings(pools: Sequence[Mapping[str, Any]], **sections: Any) -> Settings:
    """Settings from a vmpooler-shaped dict: the given pools, a DNS config ``example`` with domain
    :data:`DOMAIN`, plus any other sections (``config={...}``, ``tagfilter={...}``)."""
    doc: dict[str, Any] = {
        "dns_configs": {"example": {"dns_class": "dynamic-dns", "domain": DOMAIN}},
        "pools": [{"template": f"templates/{p['name']}", **p} for p in pools],
        **sections,
    }
    return parse_settings(doc, env={})


class FakeClock:
    """Milliseconds since the epoch, moved by the test (shared by the app and the seeding side)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, *, hours: float = 0, seconds: float = 0) -> None:
        self.now += int(hours * 3_600_000 + seconds * 1000)


@dataclass
class ApiEnv:
    client: AsyncTestClient[Any]
    redis: aioredis.Redis
    keys: Keys
    settings: Settings
    commands: PoolCommands
    clock: FakeClock
    runner: ProjectionRunner
    ips: dict[str, str] = field(default_factory=dict)

    async def seed(
        self,
        pool: str,
        ready: int,
        *,
        size: int | None = None,
        booting: int = 0,
        clone_seconds: Sequence[float] = (),
        boot_seconds: Sequence[float] = (),
        template: str = "",
    ) -> list[str]:
        """Configure ``pool`` (size ``size``, default ``ready + booting``) and bring ``ready`` of the
        requested clones to ready and ``booting`` more to booting; returns the ready VMs (oldest first)."""
        size = ready + booting if size is None else size
        settings = PoolConfigured(
            size=size,
            template=template or f"templates/{pool}",
            clone_limit=max(size, 1),
            ready_ttl=60,
            timeout=15,
        )
        await self.commands.configure(pool, settings, SEED)
        cloning = await self.in_state(pool, "cloning")
        wanted = cloning[: ready + booting]
        cloned: list[tuple[str, Event]] = []
        for i, vm in enumerate(wanted):
            self.ips[vm] = ip = f"10.0.{len(self.ips) // 250}.{len(self.ips) % 250 + 1}"
            seconds = clone_seconds[i] if i < len(clone_seconds) else 10.0
            cloned.append((vm, VmCloned(seconds=seconds, ip=ip, host="host-1")))
        if cloned:
            await self.commands.append(pool, cloned, SEED)
        for i, vm in enumerate(wanted[:ready]):
            self.clock.advance(seconds=1)  # distinct ready times: checkout takes the oldest first
            seconds = boot_seconds[i] if i < len(boot_seconds) else 20.0
            await self.commands.append(pool, [(vm, VmReady(boot_seconds=seconds))], SEED)
        await self.project()
        return wanted[:ready]

    async def project(self) -> None:
        """Fold everything appended so far into the read models."""
        await self.runner.catch_up()

    async def in_state(self, pool: str, state: str) -> list[str]:
        """The pool's VMs in ``state`` (decision state; fine to read in tests), sorted by name."""
        states = cast("dict[bytes, bytes]", await self.redis.hgetall(self.keys.state(pool)))
        return sorted(vm.decode() for vm, current in states.items() if current == state.encode())

    async def state(self, pool: str, vm: str) -> str:
        raw = cast("bytes | None", await self.redis.hget(self.keys.state(pool), vm))
        return raw.decode() if raw is not None else ""

    async def snapshot(self) -> dict[str, Any]:
        """Everything a rejected request must leave alone: each log (but for the record of a refused
        attempt, ``*.refused``), each pool's decision state, and the name registry."""
        out: dict[str, Any] = {}
        for pool in self.settings.pool_names:
            out[f"len:{pool}"] = await self._unrefused(self.keys.stream(pool))
            out[f"state:{pool}"] = await self.redis.hgetall(self.keys.state(pool))
        out["ctl"] = await self._unrefused(self.keys.control_stream())
        out["names"] = await self.redis.hlen(self.keys.names())
        return out

    async def _unrefused(self, stream: str) -> int:
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await self.redis.xrange(stream))
        return sum(1 for _, fields in entries if not fields[b"type"].endswith(b".refused"))

    async def refusals(self, stream: str) -> list[dict[str, Any]]:
        """The ``*.refused`` entries of ``stream`` (a pool, or ``events.CONTROL``): envelope and body."""
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]", await self.redis.xrange(self.keys.stream(stream))
        )
        return [
            {
                "type": f[b"type"].decode(),
                "vm": f[b"vm"].decode(),
                "actor": f[b"actor"].decode(),
                **msgspec.json.decode(f[b"data"]),
            }
            for _, f in entries
            if f[b"type"].endswith(b".refused")
        ]

    async def events(self, pool: str) -> list[Recorded]:
        """The pool's log, decoded."""
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]", await self.redis.xrange(self.keys.stream(pool))
        )
        return [decode_entry(pool, pos, fields) for pos, fields in entries]


def app_deps(
    settings: Settings, app_redis: aioredis.Redis, keys: Keys, clock: FakeClock, **extra: Any
) -> ApiDeps:
    """The app's dependencies on ``app_redis`` (a client made in the app's event loop), with
    ``extra`` :class:`ApiDeps` fields (``metrics``, ``authenticator``, ``new_id`` ...)."""
    return ApiDeps(
        settings=settings,
        redis=app_redis,
        keys=keys,
        commands=PoolCommands(app_redis, keys, clock=clock),
        reads=ReadModels(app_redis, keys),
        clock=clock,
        **{"started_at": T0 - 12_345, **extra},
    )


@contextlib.asynccontextmanager
async def api_env(
    redis: aioredis.Redis,
    redis_url: str,
    prefix: str,
    settings: Settings,
    *,
    app_redis_url: str | None = None,
    **extra: Any,
) -> AsyncIterator[ApiEnv]:
    """The app on ``settings`` under a test client, and the test-side handles on the same Redis;
    ``extra`` are further :class:`ApiDeps` fields."""
    keys = Keys(prefix)
    clock = FakeClock()
    app_redis = aioredis.Redis.from_url(app_redis_url or redis_url)
    deps = app_deps(settings, app_redis, keys, clock, **extra)
    runner = ProjectionRunner(
        redis, keys, ALL_PROJECTIONS(), list(settings.pool_names), consumer="api-tests", batch=5
    )
    async with AsyncTestClient(create_app(deps)) as client:
        try:
            yield ApiEnv(client, redis, keys, settings, PoolCommands(redis, keys, clock=clock), clock, runner)
        finally:
            client.blocking_portal.call(app_redis.aclose)


def body(response: Any) -> Any:
    """A response's JSON, checking it is pretty-printed JSON as vmpooler sends it."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    data = msgspec.json.decode(response.content)
    assert response.content == msgspec.json.format(msgspec.json.encode(data), indent=2), response.text
    return data
