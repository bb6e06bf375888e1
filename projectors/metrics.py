"""Metrics derived from the log: a projection that keeps no read model, only its checkpoint.

It runs in its own ``ProjectionRunner`` (consumer group ``proj:metrics``, leases per pool, so each
event is emitted by one process) and turns events into vmpooler's metric names:

=====================================  ===============================================================
``vm.checked-out``                     ``checkout.success.<pool>``, usage ``user.<user>.allocate.<pool>``
``vm.checkout-reverted``               ``checkout.reverted.<pool>`` (ours: a claim given back)
``vm.returned``                        ``delete.success``, usage ``....destroy.<pool>`` (+ Jenkins families)
``vm.cloned``                          gauge ``vmpooler_clone.<pool>`` (seconds)
``vm.ready``                           timing ``time_to_ready_state.<pool>`` (request to ready)
``vm.destroyed``                       gauge ``vmpooler_destroy.<pool>`` (seconds)
``vm.expired`` (boot timeout)          ``vmpooler_errors.markedasfailed.<pool>``
``vm.clone-failed``                    ``vmpooler_errors.permanently_failed.<pool>`` or ``.clone_failed.``
=====================================  ===============================================================

Delivery is at least once: metrics are emitted while a batch is applied, before its checkpoint is
committed, so a crash (or a lost lease) between the two emits that batch again. It is never part of
a rebuild (it is not in ``ALL_PROJECTIONS``), and :func:`start_at_end` makes a first start skip the
history, so replaying or rebuilding read models never re-emits old events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

import events as ev
from commands.metrics import Metrics, metric_segment
from events import Keys, Recorded
from events.streams import position, text, xrevrange

from ._tx import Tx
from .views import VmView
from .vm_detail import VmDetail

__all__ = ["MetricsProjection", "start_at_end", "usage_labels"]

_vm_decoder = msgspec.json.Decoder(VmView)


def usage_labels(user: str, build_url: str, operation: str, pool: str) -> list[str]:
    """vmpooler's usage metric names (reference §2.6) for one checkout or return.

    ``user.<user>.<op>.<pool>`` always (``unauthenticated`` without a token user); with a
    ``jenkins_build_url`` tag, ``usage_litmus.*`` for Litmus URLs, else the instance, branch/project
    and job/component families parsed from ``https://<instance>/job/<vs>_<project>_<job…>_<branch>/<labels>``.
    Dots in every part become ``_``; parts a malformed URL lacks are ``unknown``.
    """
    who = metric_segment(user) if user else "unauthenticated"
    where = metric_segment(pool)
    names = [f"user.{who}.{operation}.{where}"]
    if not build_url:
        return names
    if "litmus" in build_url:
        return [*names, f"usage_litmus.{who}.{operation}.{where}"]
    parts = build_url.split("/")[2:]
    instance = metric_segment(parts[0] if parts else "")
    words = [metric_segment(w) for w in (parts[2] if len(parts) > 2 else "").split("_")]
    value_stream = words.pop(0) if words else "unknown"
    branch = words.pop() if words else "unknown"
    project = words.pop(0) if words else "unknown"
    job_name = "_".join(words) or "unknown"
    component = "none"
    for pair in (parts[3] if len(parts) > 3 else "").split(","):
        key, _, value = pair.partition("=")
        if key == "RMM_COMPONENT_TO_TEST_NAME" and value:
            component = metric_segment(value)
    return [
        *names,
        f"usage_jenkins_instance.{instance}.{value_stream}.{operation}.{where}",
        f"usage_branch_project.{branch}.{project}.{operation}.{where}",
        f"usage_job_component.{job_name}.{component}.{operation}.{where}",
    ]


async def start_at_end(redis: Redis, keys: Keys, pools: Sequence[str]) -> None:
    """Give the metrics projection a checkpoint at the end of each pool's log if it has none, so a
    first start emits only what happens from now on (never the history)."""
    for pool in pools:
        last = await xrevrange(redis, keys.stream(pool), count=1)
        if last:
            checkpoint = f"{MetricsProjection(None).owned_prefix(keys, pool)}:checkpoint"
            await redis.set(checkpoint, text(last[0][0]), nx=True)


class MetricsProjection:
    """Emits metrics for a batch of events; writes nothing but the runner's checkpoint.

    Args:
        metrics: the sink (``None`` only for key names).
        usage_stats: emit the per-user and per-job usage families (``:config: usage_stats``).
        detail_wait_s: how long to wait for the VM detail projection to reach a returned VM's event,
            whose user and tags the usage metrics need.
    """

    name = "metrics"

    def __init__(self, metrics: Metrics | None, *, usage_stats: bool = False, detail_wait_s: float = 2.0):
        self.metrics = metrics
        self.usage_stats = usage_stats
        self.detail_wait_s = detail_wait_s

    def owned_prefix(self, keys: Keys, pool: str) -> str:
        return keys.read_model(pool, self.name)

    async def apply(self, keys: Keys, pool: str, batch: Sequence[Recorded], tx: Tx) -> None:
        m = self.metrics
        if m is None:
            return
        for r in batch:
            e = r.event
            if isinstance(e, ev.VmCheckedOut):
                m.increment(f"checkout.success.{pool}")
                if self.usage_stats:
                    for label in usage_labels(e.token_user, "", "allocate", pool):
                        m.increment(label)
            elif isinstance(e, ev.VmCheckoutReverted):
                m.increment(f"checkout.reverted.{pool}")
            elif isinstance(e, ev.VmReturned):
                m.increment("delete.success")
                if self.usage_stats:
                    view = await self._detail(tx.redis, keys, pool, r)
                    user, url = (
                        (view.token_user, view.tags.get("jenkins_build_url", "")) if view else ("", "")
                    )
                    for label in usage_labels(user, url, "destroy", pool):
                        m.increment(label)
            elif isinstance(e, ev.VmCloned):
                m.gauge(f"vmpooler_clone.{pool}", e.seconds)
            elif isinstance(e, ev.VmReady):
                m.timing(f"time_to_ready_state.{pool}", e.boot_seconds * 1000)
            elif isinstance(e, ev.VmDestroyed):
                m.gauge(f"vmpooler_destroy.{pool}", e.seconds)
            elif isinstance(e, ev.VmExpired) and e.reason == "boot_timeout":
                m.increment(f"vmpooler_errors.markedasfailed.{pool}")
            elif isinstance(e, ev.VmCloneFailed):
                kind = "permanently_failed" if e.permanent else "clone_failed"
                m.increment(f"vmpooler_errors.{kind}.{pool}")

    async def _detail(self, redis: Redis, keys: Keys, pool: str, r: Recorded) -> VmView | None:
        """The VM's detail view once that projection has folded ``r`` (or after the wait)."""
        root = keys.read_model(pool, VmDetail.name)
        target = position(r.position)
        deadline = time.monotonic() + self.detail_wait_s
        delay = 0.005
        while True:
            checkpoint = text(await redis.get(f"{root}:checkpoint"))
            if (checkpoint and position(checkpoint) >= target) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        raw = await redis.get(f"{root}:v:{r.vm}")
        return _vm_decoder.decode(raw) if raw is not None else None
