"""Key names. Every key lives under a configurable prefix, and every key of one pool carries the
Redis Cluster hash tag ``{<pool>}`` so one decision touches one slot; cross-pool aggregates use
the control tag ``{ctl}``."""

from __future__ import annotations

__all__ = ["CONTROL", "Keys"]

CONTROL = "ctl"
"""Name of the control stream's hash tag (cross-pool aggregates, tokens, on-demand requests)."""


class Keys:
    """Key names for one installation (one prefix)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "vmpooler") -> None:
        if not prefix or any(c in prefix for c in "{}: \t\n"):
            raise ValueError(f"invalid key prefix {prefix!r}: use letters, digits, '-', '_' or '.'")
        self.prefix = prefix

    def base(self, pool: str) -> str:
        """Root of every key of ``pool`` (the Lua scripts derive their keys from it)."""
        return f"{self.prefix}:{{{pool}}}"

    def stream(self, pool: str) -> str:
        """The pool's event stream: the source of truth."""
        return f"{self.prefix}:{{{pool}}}:events"

    def bell(self) -> str:
        """Pub/Sub channel: every script call that appends entries publishes each stream key it
        appended to, once, so followers read just those streams."""
        return f"{self.prefix}:bell"

    def control_stream(self) -> str:
        return f"{self.prefix}:{{{CONTROL}}}:events"

    def state(self, pool: str) -> str:
        """Hash VM → live state (decision state, written only by the decision scripts)."""
        return f"{self.prefix}:{{{pool}}}:state"

    def in_state(self, pool: str, state: str) -> str:
        """Sorted set of VMs in ``state``, scored by the time (ms) they entered it."""
        return f"{self.prefix}:{{{pool}}}:s:{state}"

    def due(self, pool: str) -> str:
        """Sorted set of armed deadlines ``<kind>:<vm>``, scored by due time (ms)."""
        return f"{self.prefix}:{{{pool}}}:due"

    def config(self, pool: str) -> str:
        """Hash of the pool's effective settings as the decision scripts see them."""
        return f"{self.prefix}:{{{pool}}}:cfg"

    def tokens(self) -> str:
        """Hash token SHA-256 → JSON {user, created}: the valid API tokens (never the tokens)."""
        return f"{self.prefix}:{{{CONTROL}}}:tokens"

    def token_last_used(self) -> str:
        """Hash token SHA-256 → ms time of its last use."""
        return f"{self.prefix}:{{{CONTROL}}}:tokens:last"

    def names(self) -> str:
        """Hash VM name → pool: names are reserved here before use, so they are unique across pools,
        and the API finds a VM's pool from its name."""
        return f"{self.prefix}:{{{CONTROL}}}:names"

    def pools(self) -> str:
        """Set of pool names that have a stream (so tools can find every stream)."""
        return f"{self.prefix}:{{{CONTROL}}}:pools"

    def members(self, role: str) -> str:
        """Sorted set of live processes of a role (name → last heartbeat ms), to share pools fairly."""
        return f"{self.prefix}:{{{CONTROL}}}:members:{role}"

    def archived(self, pool: str) -> str:
        """The last position of the pool's log moved to an archive and trimmed (absent: none)."""
        return f"{self.prefix}:{{{pool}}}:archived"

    def read_model(self, pool: str, name: str) -> str:
        """Root of a projection's keys for ``pool`` (every key of the projection starts with it)."""
        return f"{self.prefix}:{{{pool}}}:rm:{name}"

    def control_read_model(self, name: str) -> str:
        return f"{self.prefix}:{{{CONTROL}}}:rm:{name}"

    def lease(self, pool: str, holder_kind: str) -> str:
        return f"{self.prefix}:{{{pool}}}:lease:{holder_kind}"

    def dead_letters(self, pool: str) -> str:
        """Stream of work entries that failed too many times."""
        return f"{self.prefix}:{{{pool}}}:dead"

    def sim(self, provider: str, pool: str) -> str:
        """Root of the simulated provider's inventory for ``pool``."""
        return f"{self.prefix}:sim:{provider}:{{{pool}}}"

    def work(self, pool: str) -> str:
        """Root of the workers' own keys for ``pool`` (never decision state): ``…:backoff``, the pool's
        clone back-off, and ``…:task:<event id>``, the progress marker of one task request."""
        return f"{self.prefix}:{{{pool}}}:work"
