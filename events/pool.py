"""Events of a pool's control plane: its configuration, run-time overrides and resets."""

from __future__ import annotations

from ._base import Event

__all__ = ["PoolConfigured", "PoolEvent", "PoolReset"]


class PoolConfigured(Event, frozen=True, tag="pool.configured"):
    """The pool's effective settings changed (startup config, or a run-time override).

    ``source`` is ``"config"`` for the YAML at startup and ``"api"`` for a run-time override.
    Times are minutes, as in vmpooler's configuration.
    """

    size: int
    template: str
    clone_limit: int
    ready_ttl: int
    timeout: int
    clone_target: str = ""
    source: str = "config"


class PoolReset(Event, frozen=True, tag="pool.reset"):
    """Every ready and pending VM is to be replaced (drained) by fresh clones."""


PoolEvent = PoolConfigured | PoolReset
