"""The composition root: builds the real adapters from Settings and runs the roles.

Nothing else imports a concrete provider or builds Redis clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis
from litestar import Litestar

from commands.checkout import CheckoutService
from commands.dns import DNS_CLASSES, DnsRecords
from commands.handlers import Handlers
from commands.manager import Manager
from commands.metrics import Metrics
from commands.names import NameGenerator
from commands.ondemand import OndemandService
from commands.pool import PoolCommands, system_clock
from commands.provider import PoolTarget, Provider
from commands.purge import purge_unconfigured
from commands.settings import ConfigError, ProviderSettings, Settings
from commands.worker import Worker
from events import CONTROL, Keys, PoolConfigured
from projectors import ALL_PROJECTIONS, OndemandStatus, ProjectionRunner, ReadModels
from projectors.history import History
from providers.dummy import DummyProvider
from providers.vsphere import VsphereProvider
from web.app import ApiDeps, create_app
from web.auth import Authenticator, DummyAuthenticator
from web.auth_ldap import LdapAuthenticator

from .metrics import build_metrics, close_metrics, prometheus_registry, run_metric_sources
from .redis_server import RedisServer

__all__ = ["Service", "build_app", "open_redis", "pool_settings"]

log = logging.getLogger(__name__)

# builders get the provider's settings, the Redis client, the key prefix and the service being built
# (for the :config: section and the metrics sink)
PROVIDER_CLASSES: dict[str, Callable[[ProviderSettings, aioredis.Redis, str, Service], Provider]] = {
    "dummy": lambda p, redis, prefix, service: DummyProvider(p.name, redis, prefix=prefix, options=p.options),
    "vsphere": lambda p, redis, prefix, service: VsphereProvider(
        # getattr: Service.metrics is inferred in __post_init__, after this table (mypy has-type)
        p.name,
        p.options,
        global_options=service.settings.config,
        metrics=getattr(service, "metrics", None),
        redis=redis,  # migration_limit is counted across processes
        key_prefix=prefix,
    ),
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
    lock: IO[str] | None = None

    async def close(self) -> None:
        await self.client.aclose()
        if self.server is not None:
            self.server.stop()
        if self.lock is not None:
            self.lock.close()


_MIN_CONNECTIONS = 64
"""vmpooler's ``connection_pool_size`` default (10) fits its threads, not our async handlers."""


def open_redis(settings: Settings, *, start_embedded: bool = True) -> RedisHandle:
    """Connect to the configured Redis. In embedded mode, the first process to lock the data dir
    starts a ``redis-server`` there (AOF on) and publishes its port in the data dir; any other
    process (a CLI audit, say) finds it through that port file. Two servers never share a data dir."""
    url = settings.redis.connection_url()
    server = None
    lock = None
    if url is None:
        data_dir = Path(settings.redis.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = (data_dir / "lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            lock = None
            url = _running_embedded(data_dir)
        else:
            if not start_embedded:
                raise ConfigError(":redis: is not configured and no embedded Redis is running")
            server = RedisServer(data_dir, appendonly=True).start()
            (data_dir / "redis.port").write_text(str(server.port))
            url = server.url
            log.info("embedded redis-server on %s, data in %s", url, data_dir)
    # Connections idle for 2 s are PINGed before use, so a restarted Redis costs no failed request
    # (commands themselves are not retried: a decision script must never run twice). A blocking
    # pool: past its size a call waits for a connection instead of failing; blocking stream reads
    # hold a few, and the workers' hundreds of concurrent handlers share the rest.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max(_MIN_CONNECTIONS, settings.redis.connection_pool_size),
        timeout=max(1, settings.redis.connection_pool_timeout),
        health_check_interval=2,
    )
    client = aioredis.Redis(connection_pool=pool)
    return RedisHandle(client, url, server, lock)


def _running_embedded(data_dir: Path, timeout: float = 10.0) -> str:
    """The URL of the embedded Redis another process started in ``data_dir``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port_file = data_dir / "redis.port"
        if port_file.exists() and _answers(int(port_file.read_text() or 0)):
            return f"redis://127.0.0.1:{int(port_file.read_text())}/0"
        time.sleep(0.1)
    raise ConfigError(f"another process holds {data_dir}, but its embedded Redis does not answer")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def history_projection(settings: Settings) -> History:
    """The dashboard's history series, kept as ``:config: history_minute_hours`` and ``history_hour_days`` say."""
    config = settings.config
    return History(minute_hours=config.history_minute_hours, hour_days=config.history_hour_days)


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
        if settings.auth is not None and settings.auth.provider == "dummy" and not settings.config.debug:
            # as vmpooler: the dummy provider accepts any user whose password differs from the name
            raise ConfigError(
                ":auth: provider 'dummy' accepts almost any credentials; set VMPOOLER_DEBUG to use it"
            )
        self.keys = Keys(settings.redis.prefix)
        # DNS plugins by :dns_configs: dns_class; built now so an unavailable class stops startup
        self.dns = DnsRecords(settings, DNS_CLASSES)
        self.commands = PoolCommands(client, self.keys, names=NameGenerator(settings.config.prefix))
        self.reads = ReadModels(client, self.keys)
        self.metrics: Metrics = build_metrics(settings)
        self.providers: dict[str, Provider] = {}
        for name, p in settings.providers.items():
            build = PROVIDER_CLASSES.get(p.provider_class)
            if build is None:
                raise ConfigError(f":providers: {name}: provider_class {p.provider_class!r} is not available")
            self.providers[name] = build(p, client, settings.redis.prefix, self)
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
            ondemand=OndemandService(self.settings, self.commands, CheckoutService(self.settings, self.commands)),
            ondemand_clone_limit=config.ondemand_clone_limit,
        )

    def worker(self) -> Worker:
        config = self.settings.config
        handlers = Handlers(
            self.commands,
            self.targets,
            worker=self.name,
            migrate=bool(config.migration_limit),
            provider_calls=max(1, config.task_limit),
            dns=self.dns,
        )
        return Worker(
            self.redis.client,
            self.keys,
            handlers,
            self.pools,
            consumer=self.name,
            # entries in flight: clones and destroys (bounded by task_limit inside the handlers) plus
            # VMs being polled while they boot, which cost no provider slot
            concurrency=max(1, config.task_limit) * 4 + 50,
            reclaim_idle_ms=config.reclaim_idle_seconds * 1000,
            max_deliveries=config.max_deliveries,
        )

    def projections(self) -> ProjectionRunner:
        projections = [*ALL_PROJECTIONS(), history_projection(self.settings)]
        return ProjectionRunner(self.redis.client, self.keys, projections, self.pools, consumer=self.name)

    def ondemand_projections(self) -> ProjectionRunner:
        """The on-demand request status, folded from the pool streams and the control stream."""
        return ProjectionRunner(
            self.redis.client, self.keys, [OndemandStatus()], [*self.pools, CONTROL], consumer=self.name
        )

    async def run_manager(self, stop: asyncio.Event) -> None:
        """The manager role: pool timers, workers and projectors."""
        await asyncio.gather(
            self.manager().run(stop),
            self.worker().run(stop),
            self.projections().run(stop),
            self.ondemand_projections().run(stop),
            purge_unconfigured(self.settings, self.providers, self._targets.values()),
            run_metric_sources(
                self.redis.client, self.keys, self.pools, self.metrics, stop,
                consumer=self.name, usage_stats=self.settings.config.usage_stats,
                live_ms=max(60_000, self.settings.config.reclaim_idle_seconds * 1000),
            ),
        )

    async def close(self) -> None:
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.close()
        close_metrics(self.metrics)
        await self.redis.close()


def build_authenticator(settings: Settings) -> Authenticator | None:
    """The basic-auth checker for ``:auth: provider`` (``None`` when auth is off).

    Raises:
        ConfigError: the LDAP settings are unusable.
    """
    auth = settings.auth
    if auth is None:
        return None
    if auth.provider == "ldap" and auth.ldap is not None:
        return LdapAuthenticator(auth.ldap)
    return DummyAuthenticator()


def build_app(service: Service) -> Litestar:
    """The API application of ``service``."""
    return create_app(
        ApiDeps(
            settings=service.settings,
            redis=service.redis.client,
            keys=service.keys,
            commands=service.commands,
            reads=service.reads,
            clock=system_clock,
            started_at=system_clock(),
            authenticator=build_authenticator(service.settings),
            metrics=service.metrics,
            prometheus_registry=prometheus_registry(service.metrics),
        )
    )
