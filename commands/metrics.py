"""The metrics port: what ``commands/``, ``projectors/`` and ``web/`` emit, whatever the sink.

Labels are vmpooler's dotted metric names without the installation prefix (``checkout.success.debian``,
``ready.debian``); the sink adds its prefix (statsd/Graphite ``<prefix>.<label>``) or maps the label
to a Prometheus family (``vmpooler.metrics``). Emitting never blocks and never raises: a metric that
cannot be delivered is dropped, because metrics must not break the work they measure.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Metrics", "NullMetrics", "metric_segment"]


class Metrics(Protocol):
    """A metrics sink. Every method returns at once; delivery is best effort."""

    def increment(self, label: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``label``."""
        ...

    def gauge(self, label: str, value: float) -> None:
        """Set the gauge ``label`` to ``value``."""
        ...

    def timing(self, label: str, ms: float) -> None:
        """Record one duration of ``ms`` milliseconds under ``label``."""
        ...


class NullMetrics:
    """The sink when no ``:statsd:``, ``:graphite:`` or ``:prometheus:`` section is configured."""

    def increment(self, label: str, n: int = 1) -> None:
        """Do nothing."""

    def gauge(self, label: str, value: float) -> None:
        """Do nothing."""

    def timing(self, label: str, ms: float) -> None:
        """Do nothing."""


def metric_segment(value: str) -> str:
    """``value`` made safe as one segment of a dotted name: dots become ``_``, as vmpooler does for
    user and pool names in usage metrics, and so do blanks and statsd's separators ``:|@``; empty
    becomes ``unknown``."""
    return value.translate(_UNSAFE) or "unknown"


_UNSAFE = str.maketrans({c: "_" for c in ". \t\n:|@"})
