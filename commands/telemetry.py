"""Operational telemetry read from Redis itself: consumer-group lag, dead letters, stream lengths,
lease holders and worker liveness. :class:`StreamProbe` reads them (for ``/healthcheck`` and the
sampler); :class:`TelemetrySampler` turns them into gauges every few seconds in the manager role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from events import Keys
from events.streams import text, xrange

from .metrics import Metrics, metric_segment

__all__ = [
    "WORKER_GROUP",
    "GroupInfo",
    "Health",
    "PoolProbe",
    "StreamProbe",
    "TelemetrySampler",
    "check_health",
]

log = logging.getLogger(__name__)

WORKER_GROUP = "workers"
"""The competing workers' consumer group (``commands.worker``)."""


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group on one pool stream.

    Attributes:
        lag: entries not yet processed: never delivered, plus delivered but not acknowledged
            (capped at the probe's ``cap``).
        pending: delivered and not yet acknowledged.
        idle_ms: consumer name -> milliseconds since it last read or claimed (only for the groups
            the probe was asked about).
    """

    lag: int
    pending: int
    idle_ms: dict[str, int] = field(default_factory=dict)

    def live(self, within_ms: int) -> list[str]:
        """Consumers active within the last ``within_ms`` milliseconds."""
        return sorted(name for name, idle in self.idle_ms.items() if idle < within_ms)


@dataclass(frozen=True, slots=True)
class PoolProbe:
    """What one pool's stream looks like now."""

    length: int
    dead_letters: int
    groups: dict[str, GroupInfo] = field(default_factory=dict)


class StreamProbe:
    """Reads stream and group state with XINFO (works on Redis 6.2, where XINFO has no ``lag``).

    Args:
        redis: client (bytes replies).
        keys: key names of this installation.
        cap: lag is counted up to this many entries (a bounded XRANGE), so a probe stays cheap.
    """

    def __init__(self, redis: Redis, keys: Keys, *, cap: int = 10_000) -> None:
        self.redis = redis
        self.keys = keys
        self.cap = cap

    async def pool(self, pool: str, *, consumers: Sequence[str] = (WORKER_GROUP,)) -> PoolProbe:
        """Length, dead letters and every group's lag of ``pool``; the consumers' idle times only
        for the groups in ``consumers`` (one more round trip each)."""
        stream = self.keys.stream(pool)
        length = int(await self.redis.xlen(stream))
        dead = int(await self.redis.xlen(self.keys.dead_letters(pool)))
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:  # no such stream yet
            return PoolProbe(length, dead)
        found: dict[str, GroupInfo] = {}
        for g in groups:
            name, pending = text(g["name"]), int(g["pending"])
            lag = g.get("lag")
            if lag is None:  # Redis < 7, or the group's position is unknown
                lag = await self._after(stream, text(g["last-delivered-id"]))
            idle = await self._idle(stream, name) if name in consumers else {}
            found[name] = GroupInfo(min(self.cap, int(lag) + pending), pending, idle)
        return PoolProbe(length, dead, found)

    async def _after(self, stream: str, last: str) -> int:
        entries = await xrange(self.redis, stream, min=f"({last}", max="+", count=self.cap)
        return len(entries)

    async def _idle(self, stream: str, group: str) -> dict[str, int]:
        consumers = await self.redis.xinfo_consumers(stream, group)
        return {text(c["name"]): int(c["idle"]) for c in consumers}

    async def lease_holders(self, pool: str, kinds: Sequence[str]) -> dict[str, str]:
        """Lease kind -> holder (``""`` when free) for ``pool``."""
        values = [text(await self.redis.get(self.keys.lease(pool, kind))) for kind in kinds]
        return dict(zip(kinds, values, strict=True))


Counts = Callable[[list[str]], Awaitable[dict[str, dict[str, int]]]]
"""Pool names -> pool -> VM counts by state (the pool status projection)."""


class TelemetrySampler:
    """Every ``interval_s``: gauges ``ready.<pool>`` and ``running.<pool>`` (from the pool status
    projection), ``consumer_lag.<group>.<pool>``, ``vmpooler_dlq.<pool>.count``,
    ``stream_length.<pool>``, ``event_rate.<pool>`` (events per second since the last sample),
    ``lease_holders.<kind>`` (distinct processes holding that kind of lease) and ``live_workers``
    (worker processes whose consumer was active within ``live_ms``).

    Args:
        probe: the stream reader.
        metrics: the sink.
        pools: the pools to sample.
        counts: reads the pool status projection.
        interval_s: seconds between samples.
        live_ms: a worker consumer idle longer than this counts as gone.
    """

    def __init__(
        self,
        probe: StreamProbe,
        metrics: Metrics,
        pools: Sequence[str],
        counts: Counts,
        *,
        interval_s: float = 5.0,
        live_ms: int = 60_000,
    ) -> None:
        self.probe = probe
        self.metrics = metrics
        self.pools = list(pools)
        self.counts = counts
        self.interval_s = interval_s
        self.live_ms = live_ms
        self._last: dict[str, tuple[float, int]] = {}

    async def sample(self) -> None:
        """Take one sample and emit its gauges."""
        m = self.metrics
        for pool, counts in (await self.counts(self.pools)).items():
            m.gauge(f"ready.{pool}", counts.get("ready", 0))
            m.gauge(f"running.{pool}", counts.get("running", 0))
        holders: dict[str, set[str]] = {}
        workers: set[str] = set()
        for pool in self.pools:
            probe = await self.probe.pool(pool)
            now = time.monotonic()
            m.gauge(f"stream_length.{pool}", probe.length)
            m.gauge(f"vmpooler_dlq.{pool}.count", probe.dead_letters)
            before = self._last.get(pool)
            if before is not None and now > before[0]:
                m.gauge(f"event_rate.{pool}", max(0, probe.length - before[1]) / (now - before[0]))
            self._last[pool] = (now, probe.length)
            for group, info in probe.groups.items():
                m.gauge(f"consumer_lag.{metric_segment(group)}.{pool}", info.lag)
            kinds = ["manager", *(g for g in probe.groups if g.startswith("proj:"))]
            for kind, holder in (await self.probe.lease_holders(pool, kinds)).items():
                if holder:
                    holders.setdefault(metric_segment(kind), set()).add(holder)
            if WORKER_GROUP in probe.groups:
                workers.update(probe.groups[WORKER_GROUP].live(self.live_ms))
        for kind, names in holders.items():
            m.gauge(f"lease_holders.{kind}", len(names))
        m.gauge("live_workers", len(workers))

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set; a failed sample is logged and the next one tried."""
        while not stop.is_set():
            try:
                await self.sample()
            except Exception:
                log.exception("telemetry sample failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)


@dataclass(frozen=True, slots=True)
class Health:
    """The service's health as ``/healthcheck`` reports it.

    Attributes:
        ok: healthy: no lag above the limit, and a live worker whenever work is waiting.
        lag: consumer group -> entries it is behind, the most over the pools (projectors ``proj:*``
            and the workers).
        live_workers: worker processes active within the liveness window.
        waiting: work entries not yet taken or finished by a worker (over the pools).
        problems: one line per reason for ``ok`` being false.
    """

    ok: bool
    lag: dict[str, int]
    live_workers: int
    waiting: int
    problems: list[str]


async def check_health(
    probe: StreamProbe, pools: Sequence[str], *, max_lag: int = 1000, live_ms: int = 60_000
) -> Health:
    """Judge the pools' streams: unhealthy when a projector is more than ``max_lag`` entries behind
    on some pool, or work waits (the worker group is behind, or absent on a non-empty stream) while
    no worker was active within ``live_ms``. Redis errors propagate (the caller answers 503)."""
    lag: dict[str, int] = {}
    live: set[str] = set()
    waiting = 0
    problems: list[str] = []
    probes = await asyncio.gather(*(probe.pool(pool) for pool in pools))  # pools in parallel
    for pool, found in zip(pools, probes, strict=True):
        workers = found.groups.get(WORKER_GROUP)
        waiting += workers.lag if workers is not None else found.length
        if workers is not None:
            live.update(workers.live(live_ms))
        for group, info in found.groups.items():
            lag[group] = max(lag.get(group, 0), info.lag)
            if group.startswith("proj:") and info.lag > max_lag:
                problems.append(
                    f"projection {group.removeprefix('proj:')} is {info.lag} entries behind on {pool}"
                )
    if waiting and not live:
        problems.append(f"{waiting} entries wait for a worker and no worker is alive")
    return Health(not problems, dict(sorted(lag.items())), len(live), waiting, problems)
