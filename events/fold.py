"""The pure Python interpreter of the state machine tables (replay, audits and tests).

:func:`evolve` mirrors ``apply`` in ``commands/lua/lib.lua`` step for step, so a pool's decision
state folded here from its log equals the keys the live Lua scripts maintain (``state``, one
sorted set per live state, ``due``, ``carry``, ``gone``, ``cfg``). Contract of :func:`evolve`:

- an event the state machine refuses (its VM is not in one of the rule's sources) returns the
  very same state object, unchanged (the Lua replay counts it as refused and changes nothing);
- an event type without a rule (``pool.reset``, unknown types) changes nothing either;
- ``pool.configured`` writes the settings into ``cfg`` as the strings Redis stores;
- a deadline is armed on entering its states, disarmed on leaving them, disarmed by the event it
  fires (``vm.destroy-requested`` leaves the VM in ``completed``), and re-armed by its ``rearm``
  events; a terminal event records the gone time and forgets names gone for over ``GONE_KEPT_MS``.

Bodies are read as the Lua interpreter reads the JSON written by ``encode``: a field left out by
``omit_defaults`` counts as 0, not as the Struct's default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .codec import Recorded, encode
from .lifecycle import DEADLINES, GONE_KEPT_MS, NONE, SAME, TERMINAL, TRANSITIONS, Deadline
from .od_fold import SliceBook, apply_pool_event, apply_vm_event
from .pool import PoolConfigured

__all__ = ["CFG_FIELDS", "PoolState", "accepts", "evolve", "fire", "fold", "state_of"]

CFG_FIELDS = ("size", "template", "clone_limit", "ready_ttl", "timeout", "clone_target")
"""The settings ``pool.configured`` writes into the pool's ``cfg`` hash."""


class PoolState(msgspec.Struct, frozen=True, kw_only=True):
    """A pool's decision state, as the decision scripts keep it in Redis.

    Attributes:
        state: VM → live state (the ``state`` hash).
        entered: VM → ms time it entered its current state (its score in ``s:<state>``).
        due: ``<kind>:<vm>`` → ms due time of an armed deadline (the ``due`` sorted set).
        carry: ``<kind>:<vm>`` → value added to the fired body (the ``carry`` hash).
        gone: VM → ms time it reached a terminal state (the ``gone`` sorted set).
        cfg: setting → value as Redis stores it (the ``cfg`` hash).
        od, odq, odm, odn: on-demand bookkeeping (see :class:`events.od_fold.SliceBook`).
    """

    state: dict[str, str] = msgspec.field(default_factory=dict)
    entered: dict[str, int] = msgspec.field(default_factory=dict)
    due: dict[str, int] = msgspec.field(default_factory=dict)
    carry: dict[str, int] = msgspec.field(default_factory=dict)
    gone: dict[str, int] = msgspec.field(default_factory=dict)
    cfg: dict[str, str] = msgspec.field(default_factory=dict)
    od: dict[str, str] = msgspec.field(default_factory=dict)
    odq: dict[str, int] = msgspec.field(default_factory=dict)
    odm: dict[str, str] = msgspec.field(default_factory=dict)
    odn: dict[str, str] = msgspec.field(default_factory=dict)

    def book(self) -> SliceBook:
        """Copies of the on-demand fields, to change."""
        return SliceBook(od=dict(self.od), odq=dict(self.odq), odm=dict(self.odm), odn=dict(self.odn))

    def in_state(self, live_state: str) -> dict[str, int]:
        """The members of ``s:<live_state>`` with their scores."""
        return {vm: self.entered[vm] for vm, s in self.state.items() if s == live_state}


def state_of(state: PoolState, vm: str) -> str:
    """The VM's current state, ``""`` (NONE) if it is unknown or gone."""
    return state.state.get(vm, NONE)


def accepts(state: PoolState, event_type: str, vm: str) -> bool:
    """Whether the state machine allows ``event_type`` about ``vm`` now (types without a rule: yes)."""
    rule = TRANSITIONS.get(event_type)
    return rule is None or state_of(state, vm) in rule.sources


def _lua_str(value: Any) -> str:
    """How Redis stores a Lua value passed to HSET: numbers as ``%.17g``, strings as they are."""
    if isinstance(value, bool):  # cjson booleans cannot be HSET; never written by encode()
        raise TypeError("boolean setting")
    if isinstance(value, int | float):
        return f"{float(value):.17g}"
    return str(value)


def _num(body: Mapping[str, Any], field: str) -> float:
    """Lua's ``num``: the field if it is a JSON number, else 0."""
    value = body.get(field)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _cfg_num(cfg: Mapping[str, str], name: str) -> float:
    """Lua's ``cfg_num``: ``tonumber`` of the setting, or 0."""
    try:
        return float(cfg.get(name, ""))
    except ValueError:
        return 0.0


_FIRED_BY: dict[str, tuple[Deadline, ...]] = {
    t: tuple(d for d in DEADLINES if d.fires_type == t) for t in {d.fires_type for d in DEADLINES}
}
"""Event type → the deadlines it disarms because they fire it."""


def _due_at(anchor: int, n: float, d: Deadline) -> int:
    return int(anchor + math.floor(n * d.unit_ms))


def _configured(state: PoolState, body: Mapping[str, Any], event: PoolConfigured) -> PoolState:
    cfg = dict(state.cfg)
    for name in CFG_FIELDS:
        value = body.get(name)
        cfg[name] = "" if value is None and name == "clone_target" else _lua_str(value)
    if event.source == "config":  # the YAML as last applied, stored as the logged body
        cfg["yaml"] = encode(event).decode()
    return msgspec.structs.replace(state, cfg=cfg)


def evolve(state: PoolState, recorded: Recorded) -> PoolState:
    """Apply one logged event to a pool's decision state (pure; see the module for the contract)."""
    body: dict[str, Any] = msgspec.to_builtins(recorded.event)
    if isinstance(recorded.event, PoolConfigured):
        return _configured(state, body, recorded.event)
    if recorded.type.startswith("pool.ondemand-"):
        book = state.book()
        if not apply_pool_event(book, recorded):
            return state
        return msgspec.structs.replace(state, od=book.od, odq=book.odq, odm=book.odm, odn=book.odn)
    rule = TRANSITIONS.get(recorded.type)
    vm, now = recorded.vm, recorded.at
    cur = state_of(state, vm)
    if rule is None or cur not in rule.sources:
        return state
    to = cur if rule.target == SAME else rule.target
    states, entered, due = dict(state.state), dict(state.entered), dict(state.due)
    carry, gone = dict(state.carry), dict(state.gone)
    if to != cur:
        entered.pop(vm, None)
        if to in TERMINAL:
            states.pop(vm, None)
            gone = {v: t for v, t in gone.items() if t >= now - GONE_KEPT_MS}
            gone[vm] = now
        else:
            states[vm] = to
            entered[vm] = now
        for d in DEADLINES:
            member, was, is_ = f"{d.kind}:{vm}", cur in d.states, to in d.states
            if was and not is_:
                due.pop(member, None)
                if d.carry:
                    carry.pop(member, None)
            elif is_ and not was:
                n = _cfg_num(state.cfg, d.setting) if d.setting else _num(body, d.field) if d.field else 0.0
                if n > 0:
                    due[member] = _due_at(now, n, d)
    for d in _FIRED_BY.get(recorded.type, ()):  # the event a deadline fires disarms it
        due.pop(f"{d.kind}:{vm}", None)
        if d.carry:
            carry.pop(f"{d.kind}:{vm}", None)
    for d in DEADLINES:
        field = d.rearm.get(recorded.type)
        if field is None or to not in d.states:
            continue
        member, n = f"{d.kind}:{vm}", _num(body, field)
        if n > 0:
            anchor = entered.get(vm, now) if d.anchor == "entry" else now
            due[member] = _due_at(anchor, n, d)
            if d.carry:
                carry[member] = int(_num(body, d.carry)) + 1
        else:
            due.pop(member, None)
    book = state.book()
    apply_vm_event(book, vm, recorded.type, cur, to, to in TERMINAL, body)
    return PoolState(
        state=states,
        entered=entered,
        due=due,
        carry=carry,
        gone=gone,
        cfg=dict(state.cfg),
        od=book.od,
        odq=book.odq,
        odm=book.odm,
        odn=book.odn,
    )


def fold(records: Iterable[Recorded], state: PoolState | None = None) -> PoolState:
    """Fold a pool's log (oldest first) into its decision state, from ``state`` or from empty."""
    current = state if state is not None else PoolState()
    for recorded in records:
        current = evolve(current, recorded)
    return current


_BY_KIND = {d.kind: d for d in DEADLINES}
_FIRED_TYPE = {d.kind: d.fires_type for d in DEADLINES}


def fire(state: PoolState, now: int, limit: int = 200) -> list[tuple[str, str, bytes]]:
    """The events ``fire_due`` appends at ``now`` (decide only): ``(vm, type, body)`` in order.

    Mirrors ``commands/lua/fire_due.lua``: deadlines due at or before ``now``, by due time then
    member, at most ``limit``; a deadline whose VM left its states fires nothing; a carried value
    is appended to the body under the deadline's ``carry`` name.
    """
    fired: list[tuple[str, str, bytes]] = []
    due = sorted((at, member) for member, at in state.due.items() if at <= now)
    for _, member in due[:limit]:
        kind, _, vm = member.partition(":")
        d = _BY_KIND.get(kind)
        if d is None or state_of(state, vm) not in d.states:
            continue
        body = d.fires
        if d.carry and member in state.carry:
            body = body[:-1] + f',"{d.carry}":{state.carry[member]}}}'.encode()
        if accepts(state, _FIRED_TYPE[kind], vm):
            fired.append((vm, _FIRED_TYPE[kind], body))
    return fired
