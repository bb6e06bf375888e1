"""What the API needs (built by the composition root) and what ``create_app`` derives from it once.

Handlers are module-level functions; they get the :class:`Services` of their app from the app's state
(:func:`services_of`, typed), put there once by ``create_app``. The app state rather than a
``Provide`` dependency because it is free per request: Litestar resolves a dependency on every call
(a cleanup group and a kwargs pass even for a cached value), which measurably raised the API's CPU
per checkout.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from litestar import Request
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from commands.checkout import CheckoutService
from commands.metrics import Metrics, NullMetrics
from commands.ondemand import OndemandService
from commands.pool import PoolCommands
from commands.pool_config import PoolConfig
from commands.settings import Settings
from commands.telemetry import StreamProbe
from commands.tokens import Tokens
from commands.vm_ops import VmOps
from events import Keys
from projectors.read import ReadModels
from projectors.read_stats import StatsReader
from web.auth import Auth, Authenticator

__all__ = ["HEALTH_MAX_LAG", "ApiDeps", "Services", "services_of"]

HEALTH_MAX_LAG = 1000
"""Entries a projection may be behind on one pool before ``/healthcheck`` answers 503."""


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ApiDeps:
    """Everything the API depends on; the composition root builds one per process.

    Attributes:
        settings: the configuration.
        redis: client with bytes replies (the API reads projections and appends through commands).
        keys: key names of this installation.
        commands: the pools' atomic decisions.
        reads: queries over the read models.
        clock: current time in milliseconds since the epoch.
        started_at: when this process started (ms), for ``/status`` uptime.
        new_id: fresh correlation ids, one per request.
        authenticator: checks basic-auth credentials; ``None`` picks from ``:auth: provider`` (``dummy``
            is built in; any other provider refuses everyone unless the composition root passes one).
        metrics: where API outcomes that are not events go (``checkout.empty`` ...); a no-op by default.
        prometheus_registry: the process's Prometheus registry when ``:prometheus:`` is the sink; the
            API serves it at ``prometheus_endpoint`` and adds its HTTP metrics to it.
        dashboard_redis: a client with its own small connection pool for the dashboard (its reads
            and live streams); ``None``: the dashboard shares ``redis``. The app closes it on
            shutdown.
    """

    settings: Settings
    redis: Redis
    keys: Keys
    commands: PoolCommands
    reads: ReadModels
    clock: Callable[[], int]
    started_at: int
    new_id: Callable[[], str] = field(default=_new_id)
    authenticator: Authenticator | None = None
    metrics: Metrics = field(default_factory=NullMetrics)
    prometheus_registry: CollectorRegistry | None = None
    dashboard_redis: Redis | None = None


@dataclass(frozen=True, slots=True)
class Services:
    """The deps plus what the handlers derive from them, built once in ``create_app`` (never per request).

    Attributes:
        deps: what the composition root passed.
        pool_names: the configured pools, in configured order.
        checkout: hands out VMs, all or none.
        vm_ops: return, retag or change the lifetime of one VM.
        pool_config: the run-time pool overrides (``/config/...``, ``/poolreset``).
        ondemand: accepts and cancels on-demand requests.
        stats: the daily statistics reader.
        probe: stream lag and liveness, for ``/healthcheck``.
        tagfilter: ``:tagfilter:`` compiled with Ruby's line anchors.
        auth: credentials and tokens.
    """

    deps: ApiDeps
    pool_names: list[str]
    checkout: CheckoutService
    vm_ops: VmOps
    pool_config: PoolConfig
    ondemand: OndemandService
    stats: StatsReader
    probe: StreamProbe
    tagfilter: dict[str, re.Pattern[str]]
    auth: Auth

    @classmethod
    def build(cls, deps: ApiDeps) -> Services:
        # Ruby's ^ and $ match at line ends, hence MULTILINE (as web.validation.apply_tagfilter does).
        tagfilter = {tag: re.compile(rx, re.MULTILINE) for tag, rx in deps.settings.tagfilter.items()}
        checkout = CheckoutService(deps.settings, deps.commands)
        return cls(
            deps=deps,
            pool_names=list(deps.settings.pool_names),
            checkout=checkout,
            vm_ops=VmOps(deps.redis, deps.keys, deps.commands),
            pool_config=PoolConfig(deps.settings, deps.commands),
            ondemand=OndemandService(deps.settings, deps.commands, checkout),
            stats=StatsReader(deps.redis, deps.keys),
            probe=StreamProbe(deps.redis, deps.keys, cap=HEALTH_MAX_LAG + 1),
            tagfilter=tagfilter,
            auth=Auth(deps.settings, Tokens(deps.redis, deps.keys, deps.clock), deps.authenticator),
        )

    @property
    def settings(self) -> Settings:
        return self.deps.settings


def services_of(request: Request[Any, Any, Any]) -> Services:
    """The :class:`Services` of the app serving ``request`` (``app.state.services``)."""
    return cast(Services, request.app.state.services)
