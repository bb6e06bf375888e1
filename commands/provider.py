"""The provider port: what the pool manager needs from a VM backend (DESIGN §5).

Providers implement :class:`Provider`; ``commands/`` owns this protocol and never imports a concrete
provider. Every method is idempotent by VM name: creating a VM that already exists adopts it,
destroying a VM that is gone succeeds. Blocking SDKs must run behind a bounded executor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

__all__ = [
    "OptionKeys",
    "PoolTarget",
    "Provider",
    "ProviderError",
    "VmInfo",
]


class OptionKeys(msgspec.Struct, frozen=True, kw_only=True):
    """The YAML keys a provider class reads, declared as its ``OPTION_KEYS`` class attribute, so the
    configuration check can tell a provider option from a typo (and from a key nothing reads).

    Attributes:
        provider: keys of the provider's ``:providers:`` block.
        pool: keys of a pool entry, read from ``PoolTarget.options``.
    """

    provider: frozenset[str] = frozenset()
    pool: frozenset[str] = frozenset()


class PoolTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider needs to know about one pool.

    Attributes:
        name: the pool name (also the provider-side grouping: folder, label, ...).
        template: template or image path to clone from (may change at run time).
        clone_target: cluster or placement target; empty for the provider default.
        options: provider-specific pool keys from the YAML (``folder``, ``datastore``, dummy knobs, ...).
    """

    name: str
    template: str = ""
    clone_target: str = ""
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class VmInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A VM as the provider sees it.

    Attributes:
        name: the VM name (the short hostname decided by the manager).
        hostname: hostname the guest reports (used for the hostname-mismatch check); may be empty.
        ip: primary IP address, empty if not known yet.
        host: hypervisor host the VM runs on, empty if not applicable.
        powered_on: whether the VM is running.
        template: template the VM was cloned from.
    """

    name: str
    hostname: str = ""
    ip: str = ""
    host: str = ""
    powered_on: bool = True
    template: str = ""


class ProviderError(Exception):
    """A provider operation failed.

    Args:
        message: what went wrong, in the provider's words.
        permanent: ``True`` when retrying cannot help (missing template, bad credentials, ...).
        retry_in: seconds before the provider expects a retry to have a chance (an open circuit breaker,
            a quota or throttling pause); 0 when it does not know. A failed clone's pool backs off at
            least this long (see :mod:`commands.backoff`).
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_in: float = 0.0) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_in = retry_in


@runtime_checkable
class Provider(Protocol):
    """A VM backend. All methods are coroutines and idempotent by VM name."""

    name: str

    async def create_vm(self, pool: PoolTarget, vm: str) -> VmInfo:
        """Clone ``vm`` into ``pool``; if a VM of that name already exists there, return it (adopt)."""
        ...

    async def destroy_vm(self, pool: PoolTarget, vm: str) -> None:
        """Power off and delete ``vm``; succeed if it does not exist."""
        ...

    async def get_vm(self, pool: PoolTarget, vm: str) -> VmInfo | None:
        """Return the VM, or ``None`` if the provider has no VM of that name in the pool."""
        ...

    async def list_vms(self, pool: PoolTarget) -> list[str]:
        """Return the names of every VM the provider holds for ``pool`` (the inventory)."""
        ...

    async def vm_ready(self, pool: PoolTarget, vm: str) -> bool:
        """Return whether ``vm`` is booted and reachable; ``False`` (not an error) while it boots."""
        ...

    async def create_disk(self, pool: PoolTarget, vm: str, size_gb: int) -> None:
        """Attach a new disk of ``size_gb`` GiB to ``vm``."""
        ...

    async def create_snapshot(self, pool: PoolTarget, vm: str, snapshot: str) -> None:
        """Take a snapshot named ``snapshot`` of ``vm``."""
        ...

    async def revert_snapshot(self, pool: PoolTarget, vm: str, snapshot: str) -> None:
        """Revert ``vm`` to its snapshot ``snapshot``; raise ``ProviderError`` if it does not exist."""
        ...

    async def migrate_vm(self, pool: PoolTarget, vm: str) -> str:
        """Move a just-checked-out VM to a better host if the provider wants to; return its host."""
        ...

    async def tag_vm(self, pool: PoolTarget, vm: str, tags: Mapping[str, str]) -> None:
        """Label ``vm`` with ``tags`` where the backend keeps labels (vmpooler's ``tag_vm_user``: the
        checkout user as ``token-user``, for cost reports); a backend without labels does nothing."""
        ...

    async def purge_unconfigured(self, pools: list[PoolTarget], allowlist: list[str]) -> list[str]:
        """Delete VMs and folders that belong to no configured pool and are not allowlisted; return what was deleted."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...
