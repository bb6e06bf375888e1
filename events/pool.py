"""Events of a pool's control plane: its configuration, run-time overrides and resets."""

from __future__ import annotations

from ._base import Event
from ._refused import Refusal

__all__ = ["PoolChangeRefused", "PoolCheckoutFailed", "PoolConfigured", "PoolEvent", "PoolReset"]


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


class PoolCheckoutFailed(Event, frozen=True, tag="pool.checkout-failed"):
    """A checkout could not be served (vmpooler's 503), recorded for audits and the dashboard.

    Appended once per refused request name, in the stream of its first candidate pool (the pool
    itself, or an alias's first backend); it changes no state.

    Attributes:
        requested_as: the pool or alias the client asked for.
        wanted: VMs asked for under that name.
        got: VMs that could be had before the request was given up (all went back to ready).
    """

    requested_as: str
    wanted: int
    got: int = 0


class PoolChangeRefused(Refusal, frozen=True, tag="pool.refused"):
    """A client's change of this pool's configuration (size, template, clone target, reset) was
    refused; ``action`` is the endpoint's name."""


PoolEvent = PoolConfigured | PoolReset | PoolCheckoutFailed | PoolChangeRefused
