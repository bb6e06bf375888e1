"""Pure renderers: read models and settings -> vmpooler v3 response bodies (key order as vmpooler's)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from commands.checkout import Taken
from commands.settings import PoolSettings, Settings
from projectors.views import PoolStatusView, VmView

__all__ = [
    "checkout_body",
    "effective_size",
    "effective_template",
    "hostname",
    "rfc3339",
    "ruby_round",
    "ruby_time",
    "vm_body",
]

_HOUR_MS = 3_600_000
_GONE = frozenset({"destroying", "destroyed", "vanished"})


def ruby_round(value: float, digits: int) -> float:
    """Ruby's ``Float#round(digits)``: half away from zero, on the shortest decimal form of the float."""
    step = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(value)).quantize(step, rounding=ROUND_HALF_UP))


def ruby_time(ms: int) -> str:
    """Ruby's ``Time#to_s`` of a UTC time: ``YYYY-MM-DD HH:MM:SS +0000``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")


def rfc3339(ms: int) -> str:
    """Ruby's ``DateTime#rfc3339`` of a UTC time (whole seconds): ``YYYY-MM-DDTHH:MM:SS+00:00``."""
    return datetime.fromtimestamp(ms // 1000, UTC).isoformat()


def hostname(settings: Settings, pool: str, vm: str) -> str:
    """The name a client gets: ``<vm>.<domain>`` when the pool's DNS config has a domain, else ``<vm>``."""
    domain = settings.domain_for(pool)
    return f"{vm}.{domain}" if domain else vm


def checkout_body(settings: Settings, taken: dict[str, list[Taken]]) -> dict[str, Any]:
    """``{"ok": true, "<requested>": {"hostname": "<fqdn>" | ["<fqdn>", ...]}, ...}``."""
    body: dict[str, Any] = {"ok": True}
    for requested, vms in taken.items():
        names = [hostname(settings, pool, vm) for pool, vm in vms]
        body[requested] = {"hostname": names[0] if len(names) == 1 else names}
    return body


def _configured(view: PoolStatusView) -> bool:
    # A pool whose log holds a pool.configured event; before that, the settings are all we know.
    return bool(view.template or view.size or view.clone_limit or view.ready_ttl or view.timeout)


def effective_size(pool: PoolSettings, view: PoolStatusView) -> int:
    """The pool's size as last recorded in its log (run-time overrides included), else as configured."""
    return view.size if _configured(view) else pool.size


def effective_template(pool: PoolSettings, view: PoolStatusView) -> str:
    return view.template if _configured(view) else pool.template


def _state(view: VmView) -> str:
    """vmpooler's ``state``, which it derives from the VM hash's fields, not from the VM's queue:

    ``destroy`` set -> destroyed (our destroying, destroyed, vanished); else ``checkout`` set ->
    running (our running, and completed after a checkout: a returned or expired VM reads
    "running" until its destroy starts, vmpooler quirk §1.6.5); else ``check`` set -> ready (our
    ready, and completed after being ready); else pending (cloning, booting, completed straight
    from pending). We show "ready" from the moment the VM is ready: vmpooler's "pending" until the
    first health check (``check``) is not reproduced.
    """
    if view.state in _GONE:
        return "destroyed"
    if view.checkout_at:
        return "running"
    if view.ready_at:
        return "ready"
    return "pending"


def vm_body(view: VmView, settings: Settings, now_ms: int) -> dict[str, Any] | None:
    """``GET /vm/<hostname>``'s record of one VM, or ``None`` when vmpooler would have no VM hash
    (a VM the provider holds but we never cloned, i.e. discovered and not yet being destroyed)."""
    state = _state(view)
    if not view.requested_at and state != "destroyed":
        return None
    checked_out = bool(view.checkout_at)
    # lifetime: vmpooler shows the stored lifetime or the default. We store the effective lifetime at
    # checkout, so `remaining`/`end_time` use it too (vmpooler computes them with 0 when the VM kept
    # the default: quirk §1.6.4, not reproduced).
    lifetime = view.lifetime if checked_out else settings.config.vm_lifetime
    body: dict[str, Any] = {"template": view.pool, "lifetime": lifetime}
    if state == "destroyed":
        ended = view.destroy_at or view.destroyed_at
        if checked_out and ended:
            body["running"] = ruby_round((ended - view.checkout_at) / _HOUR_MS, 2)
    elif state == "running":
        end = view.checkout_at + lifetime * _HOUR_MS
        body["running"] = ruby_round((now_ms - view.checkout_at) / _HOUR_MS, 2)
        body["remaining"] = ruby_round((end - now_ms) / _HOUR_MS, 2)
        body["start_time"] = rfc3339(view.checkout_at)
        body["end_time"] = rfc3339(end)
    body["state"] = state
    if view.tags:
        body["tags"] = dict(view.tags)
    if view.snapshots:
        body["snapshots"] = list(view.snapshots)
    if view.disks:
        body["disk"] = [f"+{size}gb" for size in view.disks]
    # vmpooler resolves the hostname in DNS here, blocking the request; we show the address the
    # provider reported at clone time (deliberate divergence).
    body["ip"] = view.ip
    domain = settings.domain_for(view.pool)
    if domain:
        body["fqdn"] = f"{view.name}.{domain}"
    if view.host:
        body["host"] = view.host
    return body
