"""The pure fold of on-demand state, mirroring ``commands/lua/od_lib.lua``: the control slot's
request state, and the per-pool slice bookkeeping that ``events.fold.evolve`` applies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .codec import Recorded, encode
from .ondemand import OndemandAccepted, OndemandCancelled, OndemandForgotten, OndemandReleased

__all__ = [
    "CTL_FROM",
    "RequestsState",
    "SliceBook",
    "apply_pool_event",
    "apply_vm_event",
    "evolve_requests",
    "fold_requests",
    "slice_id",
]

CTL_FROM: dict[str, tuple[frozenset[str], str]] = {
    "ondemand.accepted": (frozenset({""}), "pending"),
    "ondemand.fulfilled": (frozenset({"pending"}), "fulfilled"),
    "ondemand.failed": (frozenset({"pending"}), "failed"),
    "ondemand.cancelled": (frozenset({"pending", "fulfilled", "failed"}), "cancelled"),
}
"""Request event -> (statuses it may be appended in, status it leads to); ``released`` and
``forgotten`` aside."""
SETTLED = frozenset({"fulfilled", "failed", "cancelled"})


class RequestsState(msgspec.Struct, frozen=True, kw_only=True):
    """The control slot's request state, as ``od_lib.lua`` keeps it.

    Attributes:
        status: request id -> status (``<ctl>:od:status``).
        due: request id -> ms time its TTL runs out, while pending (``<ctl>:od:due``).
        work: request id -> ms accepted, while the manager has something to do (``<ctl>:od:work``).
        req: request id -> its ``ondemand.accepted`` body as logged (``<ctl>:od:req``).
        forget: request id -> ms time a released request is to be forgotten (``<ctl>:od:forget``).
    """

    status: dict[str, str] = msgspec.field(default_factory=dict)
    due: dict[str, int] = msgspec.field(default_factory=dict)
    work: dict[str, int] = msgspec.field(default_factory=dict)
    req: dict[str, str] = msgspec.field(default_factory=dict)
    forget: dict[str, int] = msgspec.field(default_factory=dict)


def evolve_requests(state: RequestsState, r: Recorded) -> RequestsState:
    """Apply one control-stream event (others, and refused ones, return ``state`` unchanged)."""
    e: Any = r.event
    if not r.type.startswith("ondemand."):
        return state
    rid = e.request_id
    cur = state.status.get(rid, "")
    status, due, work, req = dict(state.status), dict(state.due), dict(state.work), dict(state.req)
    forget = dict(state.forget)
    if isinstance(e, OndemandReleased):
        if cur != e.status or rid not in work:
            return state
        work.pop(rid)
        if e.keep_ms > 0:
            forget[rid] = r.at + e.keep_ms
        return RequestsState(status=status, due=due, work=work, req=req, forget=forget)
    if isinstance(e, OndemandForgotten):
        if cur not in SETTLED or rid in work:
            return state
        for book in (status, req, forget):
            book.pop(rid, None)
        return RequestsState(status=status, due=due, work=work, req=req, forget=forget)
    sources, to = CTL_FROM[r.type]
    if cur not in sources:
        return state
    status[rid] = to
    if isinstance(e, OndemandAccepted):
        req[rid] = encode(e).decode()
        work[rid] = r.at
        if e.ttl_ms > 0:
            due[rid] = r.at + e.ttl_ms
    else:
        due.pop(rid, None)
        forget.pop(rid, None)
        if isinstance(e, OndemandCancelled):
            work.setdefault(rid, r.at)
    return RequestsState(status=status, due=due, work=work, req=req, forget=forget)


def fold_requests(records: Iterable[Recorded], state: RequestsState | None = None) -> RequestsState:
    current = state if state is not None else RequestsState()
    for r in records:
        current = evolve_requests(current, r)
    return current


# --- the pool side: slices of requests and the VMs cloned for them ------------------------------

_PENDING = frozenset({"cloning", "booting"})


class SliceBook(msgspec.Struct, kw_only=True):
    """A pool's on-demand bookkeeping (mutable scratch copies of ``PoolState``'s od fields).

    Attributes:
        od: VM -> its slice ``<request id>:<requested name>``, while the VM is not gone (``od``).
        odq: open slice -> ms time opened (``odq``; clones start oldest slice first).
        odm: open slice -> its ``pool.ondemand-requested`` body as logged (``odm``).
        odn: ``w:``/``r:``/``d:``/``f:`` + slice -> clones still to start / retries used / VMs
            delivered / failure reason (``odn``; numbers as Redis stores them).
    """

    od: dict[str, str]
    odq: dict[str, int]
    odm: dict[str, str]
    odn: dict[str, str]


def slice_id(request_id: str, requested_as: str) -> str:
    """Request ids never contain ``:`` (the API checks), so the first ``:`` splits a slice id."""
    return f"{request_id}:{requested_as}"


def _incr(odn: dict[str, str], field: str, by: int) -> None:
    odn[field] = str(int(odn.get(field, "0")) + by)


def apply_pool_event(book: SliceBook, r: Recorded) -> bool:
    """Open or close slices (``pool.ondemand-*``); False when an open refers to an open slice."""
    e: Any = r.event
    if r.type == "pool.ondemand-requested":
        s = slice_id(e.request_id, e.requested_as)
        if s in book.odq:
            return False
        book.odq[s] = r.at
        book.odm[s] = encode(e).decode()
        _incr(book.odn, f"w:{s}", e.count)
        return True
    for s in [s for s in book.odq if s.partition(":")[0] == e.request_id]:
        del book.odq[s], book.odm[s]
        for kind in "wrdf":
            book.odn.pop(f"{kind}:{s}", None)
    return True


def apply_vm_event(
    book: SliceBook, vm: str, etype: str, cur: str, to: str, terminal: bool, body: dict[str, Any]
) -> None:
    """The on-demand side of an allowed VM transition: a clone for a slice, a delivery, a loss
    (retried within the slice's ``max_retries`` unless permanent; else the slice fails)."""
    if etype == "vm.clone-requested":
        rid = body.get("request_id") or ""
        if rid:
            s = book.od[vm] = slice_id(rid, body.get("pool_alias") or "")
            if s in book.odq:
                _incr(book.odn, f"w:{s}", -1)
        return
    found = book.od.get(vm)
    if found is None:
        return
    if terminal:
        del book.od[vm]
    if found not in book.odq:
        return
    s = found
    if etype == "vm.checked-out":
        _incr(book.odn, f"d:{s}", 1)
        return
    if cur not in _PENDING or to in _PENDING or to == "ready" or f"f:{s}" in book.odn:
        return
    if etype == "vm.clone-failed" and body.get("permanent") is True:
        failure = f"Configuration error: {body.get('error') or ''}"
    else:
        allowed = msgspec.json.decode(book.odm[s]).get("max_retries", 0)
        if int(book.odn.get(f"r:{s}", "0")) < allowed:
            _incr(book.odn, f"r:{s}", 1)
            _incr(book.odn, f"w:{s}", 1)
            return
        failure = "Max retry attempts exceeded"
    book.odn[f"f:{s}"] = failure
    book.odn[f"w:{s}"] = "0"
