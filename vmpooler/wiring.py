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
from events.bell import Bell
from projectors import ALL_PROJECTIONS, OndemandStatus, ProjectionRunner, ReadModels, UserUsage
from projectors.history import History
from providers.dummy import DummyProvider
from providers.ec2 import Ec2Provider
from providers.vsphere import VsphereProvider
from web.app import ApiDeps, create_app
from web.auth import Authenticator, DummyAuthenticator
from web.auth_ldap import LdapAuthenticator

from .metrics import build_metrics, close_metrics, prometheus_registry, run_metric_sources
from .redis_client import RedisHandle, client_for

__all__ = ["Service", "build_app", "pool_settings"]

log = logging.getLogger(__name__)

# builders get the provider's settings, the Redis client, the key prefix and the service being built
# (for the :config: section and the metrics sink)
PROVIDER_CLASSES: dict[str, Callable[[ProviderSettings, aioredis.Redis, str, Service], Provider]] = {
    "dummy": lambda p, redis, prefix, service: DummyProvider(p.name, redis, prefix=prefix, options=p.options),
    "vsphere": lambda p, redis, prefix, service: VsphereProvider(
        p.name,
        p.options,
        global_options=service.settings.config,
        metrics=service.metrics,
        redis=redis,  # migration_limit is counted across processes
        key_prefix=prefix,
    ),
    "ec2": lambda p, redis, prefix, service: Ec2Provider(
        p.name,
        p.options,
        global_options=service.settings.config,
        metrics=service.metrics,
        redis=redis,  # instances per pool, for the dashboard
        key_prefix=prefix,
    ),
}


def process_name() -> str:
    """A unique name for this process: consumer, lease holder and worker name."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
    metrics: Metrics = field(init=False)
    """Where this process's metrics go (built before the providers, which count logins and migrations)."""

    def __post_init__(self) -> None:
        client, settings = self.redis.client, self.settings
        if settings.auth is not None and settings.auth.provider == "dummy" and not settings.config.debug:
            # as vmpooler: the dummy provider accepts any user whose password differs from the name
            raise ConfigError(
                ":auth: provider 'dummy' accepts almost any credentials; set VMPOOLER_DEBUG to use it"
            )
        self.keys = Keys(settings.redis.prefix)
        self.bell = Bell(client, self.keys.bell())  # one subscription for every reader of the process
        # DNS plugins by :dns_configs: dns_class; built now so an unavailable class stops startup
        self.dns = DnsRecords(settings, DNS_CLASSES)
        self.commands = PoolCommands(client, self.keys, names=NameGenerator(settings.config.prefix))
        self.reads = ReadModels(client, self.keys)
        self.metrics = build_metrics(settings)
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
            ondemand=OndemandService(
                self.settings, self.commands, CheckoutService(self.settings, self.commands)
            ),
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
            bell=self.bell,
        )

    def projections(self) -> ProjectionRunner:
        projections = [*ALL_PROJECTIONS(), history_projection(self.settings)]
        return ProjectionRunner(
            self.redis.client, self.keys, projections, self.pools, consumer=self.name, bell=self.bell
        )

    def ondemand_projections(self) -> ProjectionRunner:
        """The on-demand request status and the per-user usage, folded from the pool streams and the
        control stream."""
        return ProjectionRunner(
            self.redis.client,
            self.keys,
            [OndemandStatus(), UserUsage()],
            [*self.pools, CONTROL],
            consumer=self.name,
            bell=self.bell,
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
                self.redis.client,
                self.keys,
                self.pools,
                self.metrics,
                stop,
                consumer=self.name,
                usage_stats=self.settings.config.usage_stats,
                live_ms=max(60_000, self.settings.config.reclaim_idle_seconds * 1000),
                bell=self.bell,
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


_DASHBOARD_CONNECTIONS = 8
"""The dashboard's own pool: its live follower, its bounded backlog reads and its JSON reads."""


def dashboard_redis(service: Service) -> aioredis.Redis:
    """A client on the service's Redis with a small pool of its own, so open dashboards never take
    the connections the API and the manager need (a flood of them waits for these few)."""
    return client_for(service.redis.url, service.settings, _DASHBOARD_CONNECTIONS)


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
            dashboard_redis=dashboard_redis(service),
        )
    )
