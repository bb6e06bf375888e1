"""The vSphere provider: vmpooler's ``vsphere`` type on pyvmomi, blocking calls on a bounded thread pool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis

from commands.provider import OptionKeys, PoolTarget, ProviderError, VmInfo
from providers.guard import Guard, ProviderMetrics, Started, metric_segment, port_open
from providers.vsphere.clone import Migration, create, current_host, migrate
from providers.vsphere.connection import ConnectionPool, Credentials, Ticket
from providers.vsphere.hosts import HostSelector
from providers.vsphere.ops import OpsCache, Placement, Target, VmOps
from providers.vsphere.options import POOL_KEYS, PROVIDER_KEYS, VsphereOptions, merge_options, snapshot_tuning
from providers.vsphere.purge import purge
from providers.vsphere.slots import LocalSlots, MigrationSlots, RedisSlots

__all__ = ["VsphereProvider"]

T = TypeVar("T")


class VsphereProvider:
    """A VM backend on VMware vSphere (vCenter), satisfying :class:`commands.provider.Provider`.

    Provider options (vmpooler's ``:providers: :<name>:`` keys): ``server`` (required), ``username``,
    ``password``, ``port`` (443), ``insecure`` (skip TLS verification, default false), ``datacenter``
    (default: the first one), ``connection_pool_size`` (10), ``connection_pool_timeout`` (60 s),
    ``vsphere_timeout`` (seconds a vCenter socket may wait; default ``connection_pool_timeout_max``). Ours:
    ``ready_check_port`` (22; ``vm_ready`` also needs a TCP connect to the guest IP on it, 0 disables),
    ``ready_check_timeout`` (1 s), ``task_timeout`` (900 s: clone, destroy, disk, snapshot, migration),
    ``clone_extra_config`` (mapping of extra ``extraConfig`` keys set on every clone, e.g. vcsim's
    ``SET.guest.ipAddress`` in tests).

    vmpooler ``:config:`` keys, taken from ``global_options`` unless the provider block sets them (see
    :mod:`providers.vsphere.options`): ``create_folders`` (false: a missing pool folder is a permanent
    error), ``create_linked_clones`` (true), ``create_template_delta_disks`` (false: before the first linked
    clone of a template, give its disks a delta layer once), ``manage_host_selection`` (false: clones go to
    the least-used hosts of the resource pool's cluster in turn), ``host_selection_max_age`` (60 s),
    ``utilization_limit`` (90 %), ``migration_limit`` (0: ``migrate_vm`` only reports the host; else at
    most this many migrations of this provider at once, counted in Redis across processes when ``redis`` is
    given, see :mod:`providers.vsphere.hosts` and :mod:`providers.vsphere.slots`), ``max_tries`` (3) and
    ``retry_factor`` (10 s): a login that fails for a reason that may pass (not wrong credentials) is tried
    ``max_tries`` times, waiting ``retry_factor`` x the attempt number between tries, as vmpooler does.

    Every vCenter call goes through a circuit breaker and an adaptive timeout (vmpooler §2.8 keys, read from
    these options: ``circuit_breaker_enabled`` (true), ``circuit_breaker_failure_threshold`` (5),
    ``circuit_breaker_timeout`` (30 s), ``circuit_breaker_half_open_attempts`` (3), ``adaptive_timeout_enabled``
    (true), ``connection_pool_timeout_min`` / ``_max`` / ``_initial`` (5 / 60 / 30 s)). An open circuit fails
    fast with a retryable :class:`ProviderError`; so does a call that outlives its timeout, whose session is
    then discarded (its thread may linger until pyvmomi's socket timeout, ``connection_pool_timeout_max``,
    ends it; such threads are bounded by ``executor_workers``). Retryable failures and timeouts count against
    the breaker; permanent errors (vCenter answered) count as successes for it and teach the timeout nothing.
    The timeout covers the whole call: waiting for a worker thread and a session, and any vSphere task.

    Pool options (``PoolTarget.options``): ``folder`` (VM folder path under the datacenter; default: the pool
    name), ``datastore``, ``datacenter``, ``pool`` (resource pool path under the datacenter's host folder),
    ``network`` (port group for the clone's first network adapter), ``create_linked_clone`` (overrides
    ``create_linked_clones``), ``snapshot_mainMem_ioBlockPages`` and ``snapshot_mainMem_iowait`` (set as
    extraConfig); ``PoolTarget.clone_target`` names a cluster. ``PoolTarget.template`` is a path under the
    datacenter's VM folder.

    Args:
        name: the provider's name in the configuration.
        options: the provider's YAML block.
        global_options: vmpooler's ``:config:`` section, as a mapping or an object with attributes (only
            the keys above are read).
        metrics: where to count logins (``connect.open|fail``) and migrations (``migrate_from.<host>``,
            ``migrate_to.<host>``, timing ``migrate.<pool>`` in ms), as vmpooler's provider does.
        redis: where every process of this provider counts migrations in flight (key
            ``<key_prefix>:vsphere:<name>:migrations``); without it, each instance counts its own.
        key_prefix: the deployment's Redis key prefix.
        executor_workers: threads running pyvmomi calls (bounded; the connection pool bounds sessions).

    Raises:
        ValueError: when ``server`` is missing or an option has the wrong type.
    """

    TYPE = "vsphere"
    OPTION_KEYS = OptionKeys(provider=frozenset(PROVIDER_KEYS), pool=frozenset(POOL_KEYS))

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        *,
        global_options: object = None,
        metrics: ProviderMetrics | None = None,
        redis: aioredis.Redis | None = None,
        key_prefix: str = "vmpooler",
        executor_workers: int = 10,
    ) -> None:
        server = options.get("server")
        if not isinstance(server, str) or not server:
            raise ValueError("vsphere provider option 'server' is required")
        self.name = name
        self.metrics = metrics
        merged = merge_options(options, global_options)
        self.options = opts = VsphereOptions.parse(merged)
        self.datacenter = opts.datacenter
        self.ready_check_port = opts.ready_check_port
        self.ready_check_timeout = opts.ready_check_timeout
        self.task_timeout = opts.task_timeout
        self.extra_config = opts.extra_config
        creds = Credentials(
            server=server,
            username=str(options.get("username") or ""),
            password=str(options.get("password") or ""),
            port=opts.port,
            insecure=bool(options.get("insecure", False)),
        )
        self.guard = Guard(name, f"vSphere {creds.where}", merged, workers=executor_workers)
        self.breaker, self.timeout = self.guard.breaker, self.guard.timeout
        self.connections = ConnectionPool(
            creds,
            size=opts.connection_pool_size,
            timeout=opts.connection_pool_timeout,
            # pyvmomi's socket timeout: a stuck vCenter frees the thread (vmpooler's vsphere_timeout)
            socket_timeout=opts.vsphere_timeout or self.timeout.maximum,
            on_login=self._count_login,
            max_tries=opts.max_tries,
            retry_factor=opts.retry_factor,
        )
        self.hosts = HostSelector(max_age=opts.host_selection_max_age, limit=opts.utilization_limit)
        self.migrations: MigrationSlots = (
            LocalSlots(opts.migration_limit)
            if redis is None
            else RedisSlots(
                redis,
                f"{key_prefix}:vsphere:{name}:migrations",
                opts.migration_limit,
                lease=opts.task_timeout,
            )
        )
        self._cache = OpsCache()

    # plumbing -----------------------------------------------------------------------------------------------

    def _count_login(self, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.increment("connect.open" if ok else "connect.fail")

    def _count_migration(self, pool: str, moved: Migration) -> None:
        if self.metrics is None or not moved.source:
            return
        self.metrics.timing(f"migrate.{metric_segment(pool)}", moved.seconds * 1000)
        self.metrics.increment(f"migrate_from.{metric_segment(moved.source)}")
        self.metrics.increment(f"migrate_to.{metric_segment(moved.host)}")

    def _placement(self, pool: PoolTarget) -> Placement:
        opts = pool.options
        folder = opts.get("folder") or pool.name
        if not isinstance(folder, str) or not folder.strip("/"):
            raise ProviderError(f"pool {pool.name}: bad vSphere 'folder' {folder!r}", permanent=True)
        linked = opts.get("create_linked_clone")
        if linked is not None and not isinstance(linked, bool):
            raise ProviderError(
                f"pool {pool.name}: 'create_linked_clone' must be true or false, got {linked!r}",
                permanent=True,
            )
        return Placement(
            datacenter=str(opts.get("datacenter") or self.datacenter),
            folder=folder,
            template=pool.template,
            datastore=str(opts.get("datastore") or ""),
            resource_pool=str(opts.get("pool") or ""),
            clone_target=pool.clone_target,
            network=str(opts.get("network") or ""),
            extra_config={**self.extra_config, **snapshot_tuning(opts)},
            linked_clone=self.options.create_linked_clones if linked is None else linked,
            create_folders=self.options.create_folders,
            select_host=self.options.manage_host_selection,
            delta_disks=self.options.create_template_delta_disks,
        )

    async def _call(self, fn: Callable[[VmOps], T], *, task: bool = False) -> T:
        """Run ``fn`` on a pooled session behind the guard (:class:`providers.guard.Guard`): the adaptive
        timeout bounds getting a thread, a session and its login, and, but for calls that wait for a
        vSphere task (clone, destroy, disk, snapshot), the whole call; a task then has ``task_timeout``.
        So a call that cannot start (vCenter refusing connections, logins failing) fails within the
        adaptive timeout, naming the vCenter and the last login error. A call given up on frees its pool
        slot at once; its session is dropped, never lent again."""
        ticket = Ticket()

        def work(started: Started) -> T:
            ticket.on_start = started
            return self.connections.run(lambda si: fn(VmOps(si, self._cache)), ticket)

        return await self.guard.call(
            work,
            task_timeout=self.task_timeout if task else None,
            abandon=lambda: self.connections.abandon(ticket),
            timed_out=lambda started, limit: self._timed_out(ticket, limit),
        )

    def _timed_out(self, ticket: Ticket, limit: float) -> str:
        pool = self.connections
        if ticket.holding:
            return f"vSphere {pool.creds.where}: call timed out after {limit:g} s"
        cause = pool.last_login_error or f"vSphere {pool.creds.where}: all {pool.size} connections busy"
        return f"{cause} (no session within {limit:g} s)"

    # the Provider protocol ----------------------------------------------------------------------------------

    async def create_vm(self, pool: PoolTarget, vm: str) -> VmInfo:
        target = Target(self._placement(pool), vm)
        return await self._call(
            lambda ops: ops.info(create(ops, target, self.hosts), pool.template), task=True
        )

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
        return await self.guard.run_blocking(
            lambda: port_open(ip, self.ready_check_port, self.ready_check_timeout)
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
        """Move a checked-out VM to a least-used host of its cluster (see :mod:`providers.vsphere.hosts`);
        with ``migration_limit`` migrations of this provider in flight, or migration off (0), it stays and
        its host is reported."""
        target = Target(self._placement(pool), vm)
        slots = self.migrations
        if slots.limit <= 0:
            return (await self._call(lambda ops: current_host(ops.require_vm(target), "disabled"))).host
        if not await slots.acquire(vm):
            return (await self._call(lambda ops: current_host(ops.require_vm(target), "limit"))).host
        try:
            moved = await self._call(
                lambda ops: migrate(ops.content, ops.require_vm(target), self.hosts), task=True
            )
        finally:
            await slots.release(vm)
        self._count_migration(pool.name, moved)
        return moved.host

    async def tag_vm(self, pool: PoolTarget, vm: str, tags: Mapping[str, str]) -> None:
        """vSphere VMs carry no tags here (vmpooler's vSphere provider writes none either)."""

    async def purge_unconfigured(self, pools: list[PoolTarget], allowlist: list[str]) -> list[str]:
        placements = [self._placement(pool) for pool in pools]
        return await self._call(lambda ops: purge(ops, placements, allowlist), task=True)

    async def close(self) -> None:
        await self.guard.run_blocking(self.connections.close)
        self.guard.shutdown()
