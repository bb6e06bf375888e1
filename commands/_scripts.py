"""Loads the Lua decision scripts, with the state-machine tables rendered from events/lifecycle.py."""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from events import SCHEMA_VERSION
from events.lifecycle import DEADLINES, GONE_KEPT_MS, NONE, STATES, TERMINAL, TRANSITIONS

__all__ = ["SCRIPT_NAMES", "Scripts", "render_tables"]

SCRIPT_NAMES = (
    "append",
    "checkout",
    "configure",
    "ctl_append",
    "ctl_fire",
    "fire_due",
    "odclose",
    "odopen",
    "odstart",
    "ready",
    "reconcile",
    "replay",
    "reset",
    "swap",
)


def _lua_str(value: str | bytes) -> str:
    text = value.decode() if isinstance(value, bytes) else value
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _lua_set(items: frozenset[str] | set[str]) -> str:
    return "{" + ", ".join(f"[{_lua_str(s)}] = true" for s in sorted(items)) + "}"


@cache
def render_tables() -> str:
    """Lua source defining RULES, TERMINAL, DEADLINES and SCHEMA_VERSION from the Python tables."""
    rules = ",\n".join(
        f"  [{_lua_str(t)}] = {{from = {_lua_set(r.sources)}, to = {_lua_str(r.target)}}}"
        for t, r in sorted(TRANSITIONS.items())
    )
    deadlines = []
    for d in DEADLINES:
        rearm = "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in sorted(d.rearm.items())) + "}"
        fields = [
            f"kind = {_lua_str(d.kind)}",
            f"states = {_lua_set(d.states)}",
            f"setting = {_lua_str(d.setting) if d.setting else 'nil'}",
            f"field = {_lua_str(d.field) if d.field else 'nil'}",
            f"unit = {d.unit_ms}",
            f"rearm = {rearm}",
            f"anchor = {_lua_str(d.anchor)}",
            f"fires = {_lua_str(d.fires)}",
            f"fires_type = {_lua_str(d.fires_type)}",
            f"carry = {_lua_str(d.carry) if d.carry else 'nil'}",
        ]
        deadlines.append("  {" + ", ".join(fields) + "}")
    assert NONE == ""
    return (
        f"local SCHEMA_VERSION = {SCHEMA_VERSION}\n"
        f"local GONE_KEPT_MS = {GONE_KEPT_MS}\n"
        f"local RULES = {{\n{rules}\n}}\n"
        f"local TERMINAL = {_lua_set(TERMINAL)}\n"
        "local STATES = {" + ", ".join(_lua_str(st) for st in STATES) + "}\n"
        "local DEADLINES = {\n" + ",\n".join(deadlines) + "\n}\n"
    )


@cache
def _source(name: str) -> str:
    lua = resources.files("commands") / "lua"
    return (
        render_tables()
        + (lua / "od_lib.lua").read_text()
        + (lua / "lib.lua").read_text()
        + (lua / f"{name}.lua").read_text()
    )


class Scripts:
    """The decision scripts registered on one client (EVALSHA, reloaded on NOSCRIPT by redis-py)."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {n: redis.register_script(_source(n)) for n in SCRIPT_NAMES}

    def __getitem__(self, name: str) -> AsyncScript:
        return self._scripts[name]
