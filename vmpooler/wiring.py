"""The composition root: builds the real adapters from Settings and runs the roles.

Nothing else imports a concrete provider or builds Redis clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from commands.handlers import Handlers
from commands.manager import Manager
from commands.names import NameGenerator
from commands.pool import PoolCommands
from commands.provider import PoolTarget, Provider
from commands.settings import ConfigError, ProviderSettings, Settings
from commands.worker import Worker
from events import Keys, PoolConfigured
from projectors import ALL_PROJECTIONS, ProjectionRunner, ReadModels
from providers.dummy import DummyProvider

from .redis_server import RedisServer

__all__ = ["Service", "open_redis", "pool_settings"]

log = logging.getLogger(__name__)

PROVIDER_CLASSES: dict[str, Callable[[ProviderSettings, aioredis.Redis, str], Provider]] = {
    "dummy": lambda p, redis, prefix: DummyProvider(p.name, redis, prefix=prefix, options=p.options),
}


def process_name() -> str:
    """A unique name for this process: consumer, lease holder and worker name."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class RedisHandle:
    """A Redis client and, in embedded mode, the server we started for it."""

    client: aioredis.Redis
    url: str
    server: RedisServer | None = None

    async def close(self) -> None:
        await self.client.aclose()
        if self.server is not None:
            self.server.stop()


def _port_file(settings: Settings) -> Path:
    return Path(settings.redis.data_dir) / "redis.port"


def open_redis(settings: Settings, *, start_embedded: bool = True) -> RedisHandle:
    """Connect to the configured Redis; in embedded mode reuse a running embedded server (its port
    is in the data dir) or start one with AOF on under ``redis.data_dir``."""
    url = settings.redis.connection_url()
    server = None
    if url is None:
        port_file = _port_file(settings)
        port = int(port_file.read_text()) if port_file.exists() else None
        if port is not None and _answers(port):
            url = f"redis://127.0.0.1:{port}/0"
        elif not start_embedded:
            raise ConfigError(":redis: not configured and no embedded Redis is running")
        else:
            server = RedisServer(settings.redis.data_dir, appendonly=True).start()
            port_file.write_text(str(server.port))
            url = server.url
            log.info("embedded redis-server on %s, data in %s", url, settings.redis.data_dir)
    client = aioredis.Redis.from_url(url, health_check_interval=30)
    return RedisHandle(client, url, server)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def pool_settings(settings: Settings) -> dict[str, PoolConfigured]:
    """What the YAML asks of each pool, as the decision scripts record it."""
    return {
        p.name: PoolConfigured(
            size=p.size,
            template=p.template,
            clone_limit=settings.config.task_limit,
            ready_ttl=p.ready_ttl,
            timeout=p.timeout,
            clone_target=p.clone_target,
        )
        for p in settings.pools
    }


@dataclass
class Service:
    """Every part of a vmpooler process, built from ``settings`` over one Redis."""

    settings: Settings
    redis: RedisHandle
    name: str = field(default_factory=process_name)

    def __post_init__(self) -> None:
        client, settings = self.redis.client, self.settings
        self.keys = Keys(settings.redis.prefix)
        self.commands = PoolCommands(client, self.keys, names=NameGenerator(settings.config.prefix))
        self.reads = ReadModels(client, self.keys)
        self.providers: dict[str, Provider] = {}
        for name, p in settings.providers.items():
            build = PROVIDER_CLASSES.get(p.provider_class)
            if build is None:
                raise ConfigError(f":providers: {name}: provider_class {p.provider_class!r} is not available")
            self.providers[name] = build(p, client, settings.redis.prefix)
        self._targets = {
            pool.name: (
                self.providers[pool.provider],
                PoolTarget(
                    name=pool.name,
                    template=pool.template,
                    clone_target=pool.clone_target,
                    options=pool.options,
                ),
            )
            for pool in settings.pools
        }

    def targets(self, pool: str) -> tuple[Provider, PoolTarget]:
        return self._targets[pool]

    @property
    def pools(self) -> list[str]:
        return list(self.settings.pool_names)

    def manager(self) -> Manager:
        config = self.settings.config
        return Manager(
            self.commands,
            self.keys,
            pool_settings(self.settings),
            self.targets,
            holder=self.name,
            ready_check_s=max(1, config.vm_checktime) * 60.0,
            hostname_check=frozenset(
                p.name
                for p in self.settings.pools
                if p.check_hostname_for_mismatch and config.check_ready_vm_hostname_for_mismatch
            ),
        )

    def worker(self) -> Worker:
        config = self.settings.config
        handlers = Handlers(
            self.commands, self.targets, worker=self.name, migrate=bool(config.migration_limit)
        )
        return Worker(
            self.redis.client,
            self.keys,
            handlers,
            self.pools,
            consumer=self.name,
            concurrency=max(1, config.task_limit),
            reclaim_idle_ms=config.reclaim_idle_seconds * 1000,
            max_deliveries=config.max_deliveries,
        )

    def projections(self) -> ProjectionRunner:
        return ProjectionRunner(
            self.redis.client, self.keys, ALL_PROJECTIONS(), self.pools, consumer=self.name
        )

    async def run_manager(self, stop: asyncio.Event) -> None:
        """The manager role: pool timers, workers and projectors."""
        await asyncio.gather(self.manager().run(stop), self.worker().run(stop), self.projections().run(stop))

    async def close(self) -> None:
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.close()
        await self.redis.close()
