"""Helpers for the metrics tests: real UDP and TCP listeners on free ports, the app with a metrics
sink (``tests.integration._api.ApiEnv`` otherwise), and the metrics projection's runner."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from commands.metrics import Metrics
from commands.settings import Settings
from events import Keys
from projectors import ProjectionRunner
from projectors.metrics import MetricsProjection
from tests.integration._api import ApiEnv, api_env

__all__ = ["TcpListener", "UdpListener", "metrics_env", "metrics_runner", "until"]


async def until(check: Callable[[], bool], what: str, within: float = 5.0) -> None:
    """Poll ``check`` (yielding to the loop) until it holds, or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class UdpListener(asyncio.DatagramProtocol):
    """A statsd server stand-in: every datagram's lines, as text."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.lines.extend(data.decode().splitlines())

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[UdpListener]:
        listener = cls()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: listener, local_addr=("127.0.0.1", 0)
        )
        listener.transport = transport
        listener.port = transport.get_extra_info("sockname")[1]
        try:
            yield listener
        finally:
            transport.close()


class TcpListener:
    """A Graphite (carbon plaintext) stand-in: lines received, and the connections accepted."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while line := await reader.readline():
            self.lines.append(line.decode().rstrip("\n"))
        writer.close()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[TcpListener]:
        listener = cls()
        server = await asyncio.start_server(listener._client, "127.0.0.1", 0)
        listener.port = server.sockets[0].getsockname()[1]
        try:
            yield listener
        finally:
            for writer in listener.writers:
                writer.close()
            server.close()


def metrics_runner(
    redis: aioredis.Redis, keys: Keys, settings: Settings, metrics: Metrics
) -> ProjectionRunner:
    """The metrics projection alone, in its own runner (as the manager role runs it)."""
    projection = MetricsProjection(metrics, usage_stats=settings.config.usage_stats)
    return ProjectionRunner(redis, keys, [projection], list(settings.pool_names), consumer="metrics-tests")


@contextlib.asynccontextmanager
async def metrics_env(
    redis: aioredis.Redis,
    redis_url: str,
    prefix: str,
    settings: Settings,
    metrics: Metrics,
    *,
    registry: CollectorRegistry | None = None,
    new_id: Callable[[], str] | None = None,
    app_redis_url: str | None = None,
) -> AsyncIterator[ApiEnv]:
    """The app on ``settings`` emitting to ``metrics`` under a test client (as ``api_env``)."""
    extra: dict[str, Any] = {"new_id": new_id} if new_id is not None else {}
    async with api_env(
        redis,
        redis_url,
        prefix,
        settings,
        app_redis_url=app_redis_url,
        metrics=metrics,
        prometheus_registry=registry,
        **extra,
    ) as env:
        yield env
