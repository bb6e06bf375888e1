"""The metrics sinks (adapters of ``commands.metrics.Metrics``), chosen by ``build_metrics``.

As in vmpooler, the first configured of ``:statsd:``, ``:graphite:`` and ``:prometheus:`` wins;
with none, metrics go nowhere. statsd and Graphite names are ``<prefix>.<label>``; Prometheus names
follow ``vmpooler._prometheus_names``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import threading
import time

import statsd
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from commands.metrics import Metrics, NullMetrics
from commands.settings import ConfigError, GraphiteSettings, PrometheusSettings, Settings, StatsdSettings
from commands.telemetry import StreamProbe, TelemetrySampler
from events import Keys
from events.bell import Bell
from projectors import ProjectionRunner, ReadModels
from projectors.metrics import MetricsProjection, start_at_end

from ._prometheus_names import PrometheusFamilies

__all__ = [
    "GraphiteMetrics",
    "PrometheusMetrics",
    "StatsdMetrics",
    "build_metrics",
    "close_metrics",
    "number",
    "prometheus_registry",
    "run_metric_sources",
]

log = logging.getLogger(__name__)


def number(value: float) -> str:
    """A value as statsd and Graphite read it: no exponent, no trailing zeros (``12.5``, ``3``)."""
    return format(value, ".6f").rstrip("0").rstrip(".") or "0"


class StatsdMetrics:
    """statsd over UDP through the ``statsd`` package: counters ``|c``, gauges ``|g``, timings
    ``|ms`` (milliseconds), one datagram per metric. The server's address is resolved once, here;
    sending never waits, and a failed send (or a label statsd cannot carry) is dropped.

    Raises:
        ConfigError: ``server`` does not resolve.
    """

    def __init__(self, settings: StatsdSettings) -> None:
        try:
            self._client = statsd.StatsClient(settings.server, settings.port, prefix=settings.prefix)
        except OSError as exc:
            raise ConfigError(f":statsd: server {settings.server!r} cannot be resolved: {exc}") from None
        self._client._sock.setblocking(False)

    def increment(self, label: str, n: int = 1) -> None:
        with contextlib.suppress(UnicodeEncodeError):
            self._client.incr(label, n)

    def gauge(self, label: str, value: float) -> None:
        # statsd reads a leading sign as a change; our gauges are absolute and never negative
        with contextlib.suppress(UnicodeEncodeError):
            self._client.gauge(label, value if value > 0 else 0)

    def timing(self, label: str, ms: float) -> None:
        with contextlib.suppress(UnicodeEncodeError):
            self._client.timing(label, ms)

    def close(self) -> None:
        self._client.close()


class GraphiteMetrics:
    """Graphite's plaintext protocol (``<prefix>.<label> <value> <epoch seconds>\\n``) over TCP.

    vmpooler opens a connection and a thread per data point; here one sender thread owns one
    persistent connection, so callers (the event loop) only put a line on a bounded queue. When the
    queue is full, or the connection fails, lines are dropped; a failed connection is retried no
    sooner than ``retry_s`` later. Counters are sent as the increment, as vmpooler does.

    Args:
        settings: the ``:graphite:`` section.
        max_queue: lines waiting to be sent; beyond this new lines are dropped.
        retry_s: seconds between connection attempts after a failure.
    """

    def __init__(self, settings: GraphiteSettings, *, max_queue: int = 10_000, retry_s: float = 5.0) -> None:
        self._address = (settings.server, settings.port)
        self._prefix = settings.prefix
        self._retry_s = retry_s
        self._lines: queue.Queue[str | None] = queue.Queue(max_queue)
        self._socket: socket.socket | None = None
        self._next_attempt = 0.0
        self.dropped = 0
        self._thread = threading.Thread(target=self._send_forever, name="graphite-sender", daemon=True)
        self._thread.start()

    def _put(self, label: str, value: float) -> None:
        line = f"{self._prefix}.{label} {number(value)} {int(time.time())}\n"
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def increment(self, label: str, n: int = 1) -> None:
        self._put(label, n)

    def gauge(self, label: str, value: float) -> None:
        self._put(label, value)

    def timing(self, label: str, ms: float) -> None:
        self._put(label, ms)

    def _send_forever(self) -> None:
        closing = False
        while not closing:
            line = self._lines.get()
            if line is None:
                break
            batch = [line]
            while len(batch) < 500:
                try:
                    more = self._lines.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            self._send("".join(batch).encode("utf-8", "replace"), len(batch))
        self._disconnect()

    def _send(self, data: bytes, lines: int) -> None:
        sock = self._connect()
        if sock is None:
            self.dropped += lines
            return
        try:
            sock.sendall(data)
        except OSError as exc:
            log.warning("graphite %s:%d: send failed, %d lines dropped: %s", *self._address, lines, exc)
            self.dropped += lines
            self._disconnect()
            self._next_attempt = time.monotonic() + self._retry_s

    def _connect(self) -> socket.socket | None:
        if self._socket is not None:
            return self._socket
        if time.monotonic() < self._next_attempt:
            return None
        try:
            self._socket = socket.create_connection(self._address, timeout=5)
        except OSError as exc:
            log.warning("graphite %s:%d: cannot connect: %s", *self._address, exc)
            self._next_attempt = time.monotonic() + self._retry_s
            return None
        return self._socket

    def _disconnect(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then close the connection."""
        with contextlib.suppress(queue.Full):
            self._lines.put(None, timeout=timeout)
        self._thread.join(timeout)


class PrometheusMetrics:
    """Prometheus families in a registry of this process (never the global one); the API serves
    them at ``prometheus_endpoint`` together with its HTTP metrics (``web.prometheus``).

    Args:
        settings: the ``:prometheus:`` section.
        registry: where to register; a fresh one by default.
    """

    def __init__(self, settings: PrometheusSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self._families = PrometheusFamilies(settings.prometheus_prefix, settings.prefix, self.registry)

    def increment(self, label: str, n: int = 1) -> None:
        self._families.increment(label, n)

    def gauge(self, label: str, value: float) -> None:
        self._families.gauge(label, value)

    def timing(self, label: str, ms: float) -> None:
        self._families.observe(label, ms / 1000)


def build_metrics(settings: Settings) -> Metrics:
    """The configured sink: the first of statsd, graphite, prometheus present, else a no-op."""
    backend = settings.metrics_backend
    if backend == "statsd" and settings.statsd is not None:
        return StatsdMetrics(settings.statsd)
    if backend == "graphite" and settings.graphite is not None:
        return GraphiteMetrics(settings.graphite)
    if backend == "prometheus" and settings.prometheus is not None:
        return PrometheusMetrics(settings.prometheus)
    return NullMetrics()


def close_metrics(metrics: Metrics) -> None:
    """Release a sink's socket or sender thread (a no-op for sinks without one)."""
    if isinstance(metrics, StatsdMetrics | GraphiteMetrics):
        metrics.close()


def prometheus_registry(metrics: Metrics) -> CollectorRegistry | None:
    """The registry the API must serve, when ``metrics`` is the Prometheus sink."""
    return metrics.registry if isinstance(metrics, PrometheusMetrics) else None


async def run_metric_sources(
    redis: Redis,
    keys: Keys,
    pools: list[str],
    metrics: Metrics,
    stop: asyncio.Event,
    *,
    consumer: str,
    usage_stats: bool,
    sample_s: float = 5.0,
    live_ms: int = 60_000,
    bell: Bell | None = None,
) -> None:
    """The manager role's metric sources, until ``stop``: the metrics projection (its own runner
    and consumer group, starting at the end of the log on a first start) and the telemetry
    sampler (``live_ms``: how recently a worker must have been active to count as live; ``bell``: the
    process's, see ``events.bell``). Nothing runs
    when no sink is configured."""
    if isinstance(metrics, NullMetrics):
        return
    while not stop.is_set():  # Redis may not answer yet at startup
        try:
            await start_at_end(redis, keys, pools)
            break
        except Exception:
            log.exception("metrics: reading the ends of the logs failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
    runner = ProjectionRunner(
        redis,
        keys,
        [MetricsProjection(metrics, usage_stats=usage_stats)],
        pools,
        consumer=consumer,
        bell=bell,
    )
    reads = ReadModels(redis, keys)

    async def counts(names: list[str]) -> dict[str, dict[str, int]]:
        return {pool: view.counts for pool, view in (await reads.pool_status(names)).items()}

    probe = StreamProbe(redis, keys)
    sampler = TelemetrySampler(probe, metrics, pools, counts, interval_s=sample_s, live_ms=live_ms)
    await asyncio.gather(runner.run(stop), sampler.run(stop))
