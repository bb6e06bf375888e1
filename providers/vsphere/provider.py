"""The vSphere provider: vmpooler's ``vsphere`` type on pyvmomi, blocking calls on a bounded thread pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pyVmomi import vim

from commands.provider import PoolTarget, ProviderError, VmInfo
from providers.vsphere.connection import ConnectionPool, Credentials, Ticket
from providers.vsphere.ops import Placement, Target, VmOps, port_open
from providers.vsphere.purge import purge
from providers.vsphere.resilience import AdaptiveTimeout, CircuitBreaker, CircuitOpenError

__all__ = ["VsphereProvider"]

T = TypeVar("T")

DEFAULT_POOL_SIZE = 10
DEFAULT_POOL_TIMEOUT = 60.0


def _int(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"vsphere provider option {key!r} must be an integer, got {value!r}")
    return value


def _float(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"vsphere provider option {key!r} must be a non-negative number, got {value!r}")
    return float(value)


def _snapshot_tuning(pool_options: Mapping[str, Any]) -> dict[str, str]:
    """vmpooler's ``snapshot_mainMem_ioBlockPages`` / ``snapshot_mainMem_iowait`` pool keys as extraConfig."""
    keys = {
        "snapshot_mainMem_ioBlockPages": "mainMem.ioBlockPages",
        "snapshot_mainMem_iowait": "mainMem.iowait",
    }
    return {vmx: str(pool_options[key]) for key, vmx in keys.items() if pool_options.get(key) is not None}


class VsphereProvider:
    """A VM backend on VMware vSphere (vCenter), satisfying :class:`commands.provider.Provider`.

    Provider options (vmpooler's ``:providers: :<name>:`` keys): ``server`` (required), ``username``,
    ``password``, ``port`` (443), ``insecure`` (skip TLS verification, default false), ``datacenter``
    (default: the first one), ``connection_pool_size`` (10), ``connection_pool_timeout`` (60 s). Ours:
    ``ready_check_port`` (22; ``vm_ready`` also needs a TCP connect to the guest IP on it, 0 disables),
    ``ready_check_timeout`` (1 s), ``task_timeout`` (900 s: clone, destroy, disk, snapshot), ``clone_extra_config`` (mapping of extra ``extraConfig`` keys set on every
    clone, e.g. vcsim's ``SET.guest.ipAddress`` in tests).

    Every vCenter call goes through a circuit breaker and an adaptive timeout (vmpooler §2.8 keys, read from
    these options: ``circuit_breaker_enabled`` (true), ``circuit_breaker_failure_threshold`` (5),
    ``circuit_breaker_timeout`` (30 s), ``circuit_breaker_half_open_attempts`` (3), ``adaptive_timeout_enabled``
    (true), ``connection_pool_timeout_min`` / ``_max`` / ``_initial`` (5 / 60 / 30 s)). An open circuit fails
    fast with a retryable :class:`ProviderError`; so does a call that outlives its timeout, whose session is
    then discarded (its thread may linger until pyvmomi's socket timeout, ``connection_pool_timeout_max``,
    ends it; such threads are bounded by ``executor_workers``). Retryable failures and timeouts count against
    the breaker; permanent errors (vCenter answered) count as successes for it and teach the timeout nothing.
    The timeout covers the whole call: waiting for a worker thread and a session, and any vSphere task.

    Pool options (``PoolTarget.options``): ``folder`` (VM folder path under the datacenter, created as needed;
    default: the pool name), ``datastore``, ``datacenter``, ``pool`` (resource pool path under the datacenter's host
    folder), ``snapshot_mainMem_ioBlockPages`` and ``snapshot_mainMem_iowait`` (set as extraConfig); ``PoolTarget.clone_target`` names a cluster. ``PoolTarget.template`` is a path under the
    datacenter's VM folder.

    Args:
        name: the provider's name in the configuration.
        options: the provider's YAML block.
        executor_workers: threads running pyvmomi calls (bounded; the connection pool bounds sessions).

    Raises:
        ValueError: when ``server`` is missing or an option has the wrong type.
    """

    TYPE = "vsphere"

    def __init__(self, name: str, options: Mapping[str, Any], *, executor_workers: int = 10) -> None:
        server = options.get("server")
        if not isinstance(server, str) or not server:
            raise ValueError("vsphere provider option 'server' is required")
        if executor_workers < 1:
            raise ValueError(f"executor_workers must be at least 1, got {executor_workers}")
        self.name = name
        self.datacenter = str(options.get("datacenter") or "")
        self.ready_check_port = _int(options, "ready_check_port", 22)
        self.ready_check_timeout = _float(options, "ready_check_timeout", 1.0)
        # a clone can take minutes; the adaptive timeout (at most 60 s) is for vCenter's answers
        self.task_timeout = _float(options, "task_timeout", 900.0)
        extra = options.get("clone_extra_config") or {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"vsphere provider option 'clone_extra_config' must be a mapping, got {extra!r}")
        self.extra_config = {str(k): str(v) for k, v in extra.items()}
        creds = Credentials(
            server=server,
            username=str(options.get("username") or ""),
            password=str(options.get("password") or ""),
            port=_int(options, "port", 443),
            insecure=bool(options.get("insecure", False)),
        )
        self.breaker = CircuitBreaker.from_options(name, options)
        self.timeout = AdaptiveTimeout.from_options(options)
        self.connections = ConnectionPool(
            creds,
            size=_int(options, "connection_pool_size", DEFAULT_POOL_SIZE),
            timeout=_float(options, "connection_pool_timeout", DEFAULT_POOL_TIMEOUT),
            socket_timeout=self.timeout.maximum,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=executor_workers, thread_name_prefix=f"vsphere-{name}"
        )

    # plumbing -----------------------------------------------------------------------------------------------

    def _placement(self, pool: PoolTarget) -> Placement:
        opts = pool.options
        folder = opts.get("folder") or pool.name
        if not isinstance(folder, str) or not folder.strip("/"):
            raise ProviderError(f"pool {pool.name}: bad vSphere 'folder' {folder!r}", permanent=True)
        return Placement(
            datacenter=str(opts.get("datacenter") or self.datacenter),
            folder=folder,
            template=pool.template,
            datastore=str(opts.get("datastore") or ""),
            resource_pool=str(opts.get("pool") or ""),
            clone_target=pool.clone_target,
            extra_config={**self.extra_config, **_snapshot_tuning(opts)},
        )

    async def _call(self, fn: Callable[[VmOps], T], *, task: bool = False) -> T:
        """Run ``fn`` on a pooled session in the executor, behind the circuit breaker and a timeout:
        the adaptive one, or ``task_timeout`` for calls that wait for a vSphere task (clone,
        destroy, disk, snapshot), whose durations say nothing about vCenter's responsiveness."""

        def work(si: vim.ServiceInstance) -> T:
            return fn(VmOps(si))

        breaker = self.breaker
        if breaker is not None:
            try:
                breaker.before_call()
            except CircuitOpenError as exc:
                raise ProviderError(f"vSphere provider {self.name}: {exc}") from exc
        limit = self.task_timeout if task else self.timeout.current
        ticket = Ticket()
        started = time.monotonic()
        future = self._executor.submit(self.connections.run, work, ticket)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), limit)
        except TimeoutError:
            self.connections.abandon(ticket)  # frees the slot; the session is dropped, never lent again
            if not task:
                self.timeout.record_failure()
            if breaker is not None:
                breaker.record_failure()
            raise ProviderError(f"vSphere call timed out after {limit:g} s") from None
        except ProviderError as exc:
            if exc.permanent:  # vCenter answered: healthy, but not a duration sample
                if breaker is not None:
                    breaker.record_success()
            else:
                self.timeout.record_failure()
                if breaker is not None:
                    breaker.record_failure()
            raise
        except asyncio.CancelledError:
            self.connections.abandon(ticket)
            raise
        if not task:
            self.timeout.record_success(time.monotonic() - started)
        if breaker is not None:
            breaker.record_success()
        return result

    # the Provider protocol ----------------------------------------------------------------------------------

    async def create_vm(self, pool: PoolTarget, vm: str) -> VmInfo:
        target = Target(self._placement(pool), vm)
        return await self._call(lambda ops: ops.info(ops.create(target), pool.template), task=True)

    async def get_vm(self, pool: PoolTarget, vm: str) -> VmInfo | None:
        target = Target(self._placement(pool), vm)

        def get(ops: VmOps) -> VmInfo | None:
            found = ops.find_vm(target)
            return None if found is None else ops.info(found, pool.template)

        return await self._call(get)

    async def list_vms(self, pool: PoolTarget) -> list[str]:
        placement = self._placement(pool)
        return await self._call(lambda ops: ops.list_vms(placement))

    async def destroy_vm(self, pool: PoolTarget, vm: str) -> None:
        target = Target(self._placement(pool), vm)
        await self._call(lambda ops: ops.destroy(target), task=True)

    async def vm_ready(self, pool: PoolTarget, vm: str) -> bool:
        target = Target(self._placement(pool), vm)
        ip = await self._call(lambda ops: ops.ready_ip(target))
        if ip is None or self.ready_check_port <= 0:
            return ip is not None
        # The TCP check holds a worker thread but no vSphere session.
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, port_open, ip, self.ready_check_port, self.ready_check_timeout
        )

    async def create_disk(self, pool: PoolTarget, vm: str, size_gb: int) -> None:
        target = Target(self._placement(pool), vm)
        await self._call(lambda ops: ops.add_disk(target, size_gb), task=True)

    async def create_snapshot(self, pool: PoolTarget, vm: str, snapshot: str) -> None:
        target = Target(self._placement(pool), vm)
        await self._call(lambda ops: ops.snapshot(target, snapshot), task=True)

    async def revert_snapshot(self, pool: PoolTarget, vm: str, snapshot: str) -> None:
        target = Target(self._placement(pool), vm)
        await self._call(lambda ops: ops.revert(target, snapshot), task=True)

    async def migrate_vm(self, pool: PoolTarget, vm: str) -> str:
        # TODO(issue 4): move to the least-used compatible host (vmpooler's migrate_vm); for now stay put.
        target = Target(self._placement(pool), vm)
        return await self._call(lambda ops: ops.host_of(target))

    async def purge_unconfigured(self, pools: list[PoolTarget], allowlist: list[str]) -> list[str]:
        placements = [self._placement(pool) for pool in pools]
        return await self._call(lambda ops: purge(ops, placements, allowlist))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.connections.close)
        self._executor.shutdown(wait=True)
