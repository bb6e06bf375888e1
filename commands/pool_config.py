"""Run-time overrides of a pool's settings (vmpooler's experimental config endpoints, §2.4).

Every override is a ``pool.configured`` event with ``source="api"`` appended through
:class:`PoolCommands`, so it is in the audit log; a template or clone-target change also drains
the pool (a ``pool.reset``), as vmpooler's manager does when it notices such an override.
"""

from __future__ import annotations

from typing import cast

import msgspec

from events import PoolConfigured
from events.fold import CFG_FIELDS

from .pool import Meta, PoolCommands
from .settings import Settings

__all__ = ["PoolConfig", "effective_settings", "startup_plan", "startup_settings", "yaml_baseline"]

_CONFIGURED = PoolConfigured.__struct_config__.tag


def startup_settings(settings: Settings, pool: str) -> PoolConfigured:
    """What the YAML asks of ``pool`` (the values an undo restores); mirrors the composition root's
    ``pool_settings``, which this layer may not import."""
    p = settings.pool(pool)
    if p is None:
        raise KeyError(pool)
    return PoolConfigured(
        size=p.size,
        template=p.template,
        clone_limit=settings.config.task_limit,
        ready_ttl=p.ready_ttl,
        timeout=p.timeout,
        clone_target=p.clone_target,
    )


async def effective_settings(commands: PoolCommands, pool: str) -> PoolConfigured | None:
    """The pool's effective settings as its decision state holds them; ``None`` if never configured."""
    raw = cast("dict[bytes, bytes]", await commands.redis.hgetall(commands.keys.config(pool)))
    cfg = {k.decode(): v.decode() for k, v in raw.items()}
    if not all(f in cfg for f in CFG_FIELDS):
        return None
    return PoolConfigured(
        size=int(float(cfg["size"])),
        template=cfg["template"],
        clone_limit=int(float(cfg["clone_limit"])),
        ready_ttl=int(float(cfg["ready_ttl"])),
        timeout=int(float(cfg["timeout"])),
        clone_target=cfg["clone_target"],
        source="api",
    )


async def yaml_baseline(commands: PoolCommands, pool: str) -> PoolConfigured | None:
    """The settings of the pool's last ``source="config"`` event (what the YAML said when last
    applied), kept in the decision state by ``apply``; ``None`` when there is none."""
    raw = await commands.redis.hget(commands.keys.config(pool), "yaml")
    if raw is None:
        return None
    return msgspec.json.decode(raw, type=PoolConfigured)


def startup_plan(
    wanted: PoolConfigured, baseline: PoolConfigured | None, current: PoolConfigured | None
) -> list[PoolConfigured]:
    """What a manager records at startup so that API overrides survive restarts.

    A setting the YAML still gives as it did last time (``baseline``) keeps its current, possibly
    overridden, value; a setting the YAML changed since is applied. When the YAML changed, it is
    recorded first (the new baseline) and the kept overrides are re-applied after it.
    """
    if baseline is None or current is None:
        return [wanted]
    kept = {
        f: getattr(current, f)
        for f in CFG_FIELDS
        if getattr(wanted, f) == getattr(baseline, f) and getattr(current, f) != getattr(baseline, f)
    }
    if not kept:
        return [wanted]
    merged = msgspec.structs.replace(wanted, source="api", **kept)
    if all(getattr(wanted, f) == getattr(baseline, f) for f in CFG_FIELDS):
        return [merged]  # equal to the current settings: nothing is appended
    return [wanted, merged]


class PoolConfig:
    """Set, undo and reset the pools' run-time settings.

    Args:
        settings: the configuration (the startup values of each pool).
        commands: the pools' atomic decisions.
    """

    def __init__(self, settings: Settings, commands: PoolCommands) -> None:
        self.settings = settings
        self.commands = commands

    async def current(self, pool: str) -> PoolConfigured:
        """The pool's effective settings as the decision state holds them (the YAML's before the
        manager first configured the pool)."""
        current = await effective_settings(self.commands, pool)
        return startup_settings(self.settings, pool) if current is None else current

    async def _override(self, pool: str, meta: Meta, *, drain: bool, **changes: int | str) -> bool:
        """Record ``changes`` as an API override if they change anything; drain when asked."""
        now = await self.current(pool)
        wanted = msgspec.structs.replace(now, source="api", **changes)
        if all(getattr(now, k) == v for k, v in changes.items()):
            return False
        changed, _ = await self.commands.configure(pool, wanted, meta)
        if changed and drain:
            await self.commands.reset(pool, meta)
        return changed

    async def set_size(self, pool: str, size: int, meta: Meta) -> bool:
        """Override the size (no drain: excess ready VMs are trimmed, a shortfall is refilled).

        Returns:
            whether the size changed.
        """
        return await self._override(pool, meta, drain=False, size=size)

    async def set_template(self, pool: str, template: str, meta: Meta) -> bool:
        """Override the template; a change drains the pool and refills it from the new template."""
        return await self._override(pool, meta, drain=True, template=template)

    async def set_clone_target(self, pool: str, target: str, meta: Meta) -> bool:
        """Override the clone target; a change drains the pool."""
        return await self._override(pool, meta, drain=True, clone_target=target)

    async def undo_size(self, pool: str, meta: Meta) -> tuple[bool, int, int]:
        """Restore the startup size.

        Returns:
            (whether it changed, the size before, the startup size)
        """
        before, startup = (await self.current(pool)).size, startup_settings(self.settings, pool).size
        return await self.set_size(pool, startup, meta), before, startup

    async def undo_template(self, pool: str, meta: Meta) -> tuple[bool, str, str]:
        """Restore the startup template (draining the pool if it differs).

        Returns:
            (whether it changed, the template before, the startup template)
        """
        before = (await self.current(pool)).template
        startup = startup_settings(self.settings, pool).template
        return await self.set_template(pool, startup, meta), before, startup

    async def reset(self, pool: str, meta: Meta) -> int:
        """Drain the pool and refill it; returns how many VMs were drained."""
        return await self.commands.reset(pool, meta)
