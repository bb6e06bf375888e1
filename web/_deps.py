"""What the API needs (built by the composition root) and what ``create_app`` derives from it once."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from commands.checkout import CheckoutService
from commands.metrics import Metrics, NullMetrics
from commands.pool import PoolCommands
from commands.settings import Settings
from commands.tokens import Tokens
from commands.vm_ops import VmOps
from events import Keys
from projectors.read import ReadModels
from projectors.read_stats import StatsReader
from web.auth import Auth, Authenticator

__all__ = ["ApiDeps", "Services"]


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


@dataclass(frozen=True, slots=True)
class Services:
    """The deps plus what the routes derive from them, built once in ``create_app`` (never per request)."""

    deps: ApiDeps
    checkout: CheckoutService
    vm_ops: VmOps
    stats: StatsReader
    tagfilter: dict[str, re.Pattern[str]]
    auth: Auth

    @classmethod
    def build(cls, deps: ApiDeps) -> Services:
        # Ruby's ^ and $ match at line ends, hence MULTILINE (as web.validation.apply_tagfilter does).
        tagfilter = {tag: re.compile(rx, re.MULTILINE) for tag, rx in deps.settings.tagfilter.items()}
        return cls(
            deps=deps,
            checkout=CheckoutService(deps.settings, deps.commands),
            vm_ops=VmOps(deps.redis, deps.keys, deps.commands),
            stats=StatsReader(deps.redis, deps.keys),
            tagfilter=tagfilter,
            auth=Auth(deps.settings, Tokens(deps.redis, deps.keys, deps.clock), deps.authenticator),
        )
