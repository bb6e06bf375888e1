"""vmpooler's dotted metric names mapped to Prometheus families (reference §5.1).

A name's family is ``<prometheus_prefix>_<first segment>``, or ``..._<first>_<second>`` for the
families whose second segment is a kind (``checkout.success``, ``delete.failed`` ...). The remaining
segments fill the family's labels in order; a family with a single label gets them all joined by
``.`` (``vmpooler_errors.markedasfailed.debian`` -> ``metric_path="markedasfailed.debian"``). Every
sample also carries ``vmpooler_instance=<:prometheus: prefix>``. Unknown names are logged once and
dropped, as vmpooler does. Counters are exposed with the ``_total`` suffix prometheus_client adds.
"""

from __future__ import annotations

import logging
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["FAMILIES", "PrometheusFamilies"]

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]

_POOL = ("poolname",)
_TIME_TO_READY_BUCKETS = (30, 60, 120, 180, 240, 300, 500, 800, 1200, 1600)

FAMILIES: dict[str, tuple[Kind, tuple[str, ...], str]] = {
    "checkout.success": ("counter", _POOL, "VMs handed out"),
    "checkout.reverted": (
        "counter",
        _POOL,
        "VMs returned to ready because a request could not be served whole",
    ),
    "checkout.empty": ("counter", _POOL, "checkouts refused for lack of ready VMs"),
    "checkout.invalid": ("counter", _POOL, "checkouts naming no pool or alias"),
    "checkout.nonresponsive": ("counter", _POOL, "unused (vmpooler registers it)"),
    "delete.success": ("counter", (), "VMs returned by clients"),
    "delete.failed": ("counter", (), "returns of unknown or not checked-out VMs"),
    "ondemandrequest_generate.success": ("counter", (), "on-demand requests accepted"),
    "ondemandrequest_generate.duplicaterequests": ("counter", (), "on-demand requests refused as duplicates"),
    "ondemandrequest_fail.toomanyrequests": ("counter", _POOL, "on-demand requests over the limit"),
    "ondemandrequest_fail.invalid": ("counter", _POOL, "on-demand requests naming no pool"),
    "config.invalid": ("counter", _POOL, "invalid run-time configuration changes"),
    "poolreset.invalid": ("counter", _POOL, "invalid pool resets"),
    "http_requests_vm_total": ("counter", ("method", "subpath", "operation"), "VM API requests by operation"),
    "user": ("counter", ("user", "operation", "poolname"), "usage by user"),
    "usage_litmus": ("counter", ("user", "operation", "poolname"), "usage by Litmus jobs"),
    "usage_jenkins_instance": (
        "counter",
        ("jenkins_instance", "value_stream", "operation", "poolname"),
        "usage by Jenkins instance",
    ),
    "usage_branch_project": ("counter", ("branch", "project", "operation", "poolname"), "usage by branch"),
    "usage_job_component": (
        "counter",
        ("job_name", "component_to_test", "operation", "poolname"),
        "usage by job",
    ),
    "ready": ("gauge", _POOL, "ready VMs"),
    "running": ("gauge", _POOL, "checked-out VMs"),
    "time_to_ready_state": ("histogram", _POOL, "seconds from clone request to ready"),
    "vmpooler_clone": ("gauge", _POOL, "seconds the last clone took"),
    "vmpooler_destroy": ("gauge", _POOL, "seconds the last destroy took"),
    "vmpooler_errors": ("counter", ("metric_path",), "lifecycle errors"),
    "vmpooler_dlq": ("gauge", ("metric_path",), "entries in a dead-letter stream"),
    "consumer_lag": ("gauge", ("group", "poolname"), "entries a consumer group has not processed"),
    "stream_length": ("gauge", _POOL, "entries in a pool's event stream"),
    "event_rate": ("gauge", _POOL, "events appended per second"),
    "lease_holders": ("gauge", ("lease",), "processes holding leases of a kind"),
    "live_workers": ("gauge", (), "worker processes seen recently"),
}
"""Family key -> (type, labels, help)."""


class PrometheusFamilies:
    """The families of :data:`FAMILIES`, registered in ``registry`` at once (stable scrapes)."""

    def __init__(self, prometheus_prefix: str, instance: str, registry: CollectorRegistry) -> None:
        self._instance = instance
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._unknown: set[str] = set()
        for key, (kind, labels, doc) in FAMILIES.items():
            name = f"{prometheus_prefix}_{key.replace('.', '_')}"
            names = ("vmpooler_instance", *labels)
            if kind == "counter":
                self._metrics[key] = Counter(name, doc, names, registry=registry)
            elif kind == "gauge":
                self._metrics[key] = Gauge(name, doc, names, registry=registry)
            else:
                self._metrics[key] = Histogram(
                    name, doc, names, registry=registry, buckets=_TIME_TO_READY_BUCKETS
                )

    def _resolve(self, label: str, kind: Kind) -> Counter | Gauge | Histogram | None:
        """The family's child for ``label``, or ``None`` (logged once) when the name is unknown."""
        segments = label.split(".")
        key, rest = ".".join(segments[:2]), segments[2:]
        if key not in FAMILIES:
            key, rest = segments[0], segments[1:]
        spec = FAMILIES.get(key)
        if spec is not None and spec[0] == kind:
            names = spec[1]
            if len(names) == 1 and rest:
                rest = [".".join(rest)]
            if len(rest) == len(names):
                return self._metrics[key].labels(self._instance, *rest)
        if label not in self._unknown and len(self._unknown) < 1000:
            self._unknown.add(label)
            log.warning("prometheus: no %s family for metric %r; dropped", kind, label)
        return None

    def increment(self, label: str, n: int) -> None:
        metric = self._resolve(label, "counter")
        if isinstance(metric, Counter):
            metric.inc(n)

    def gauge(self, label: str, value: float) -> None:
        metric = self._resolve(label, "gauge")
        if isinstance(metric, Gauge):
            metric.set(value)

    def observe(self, label: str, seconds: float) -> None:
        metric = self._resolve(label, "histogram")
        if isinstance(metric, Histogram):
            metric.observe(seconds)
