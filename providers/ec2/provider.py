"""The EC2 provider: vmpooler's ``ec2`` type on boto3, blocking calls behind the shared guard."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import boto3
import redis.asyncio as aioredis
from botocore.config import Config
from redis.exceptions import RedisError

from commands.provider import OptionKeys, PoolTarget, ProviderError, VmInfo
from providers.ec2.api import TAG_VM, Ec2Api, QuotaExceeded
from providers.ec2.options import POOL_KEYS, PROVIDER_KEYS, Ec2Options, PoolSpec
from providers.ec2.volumes import add_disk, revert, snapshot
from providers.guard import Guard, ProviderMetrics, Started, merge_options, metric_segment, port_open

__all__ = ["Ec2Provider"]

T = TypeVar("T")


class Ec2Provider:
    """A VM backend on AWS EC2, satisfying :class:`commands.provider.Provider`.

    Provider options (``:providers: :<name>:``; docs/configuration.md has them all): ``region`` (required),
    ``zone``, ``instance_type`` (vmpooler's ``amisize``), ``subnet_id``, ``security_group_ids``, ``key_name``,
    ``volume_size`` (GiB of the root volume; 0 keeps the AMI's), ``tags`` (applied to every instance and its
    volumes) — each of these may be overridden per pool — plus ``endpoint_url``, credentials
    (``aws_access_key_id`` / ``aws_secret_access_key`` / ``aws_session_token`` / ``profile``, else vmpooler's
    ``ABS_AWS_*`` variables, else boto3's standard chain), ``ready_check_port`` (22, 0 disables),
    ``ready_check_timeout`` (1 s), ``task_timeout`` (900 s), ``quota_pause`` (300 s), ``throttle_retries``
    (4), ``throttle_base`` (0.2 s), ``wait_poll`` (2 s), and the breaker and adaptive-timeout keys.

    A pool's ``template`` is its AMI id. Every instance is tagged ``Name`` and ``vm_name`` (the VM),
    ``pool``, ``vmpooler_prefix`` (the installation) and, once checked out, ``token-user``.

    Args:
        name: the provider's name in the configuration.
        options: the provider's YAML block.
        global_options: vmpooler's ``:config:`` (its breaker and timeout keys apply unless set here).
        metrics: where to report instances per pool (gauge ``ec2.<provider>.instances.<pool>``).
        redis: where the instance counts are also kept for the dashboard (hash
            ``<key_prefix>:ec2:<name>:instances``, pool → count, written by every inventory).
        key_prefix: the installation's Redis key prefix, tagged on its instances.
        executor_workers: threads running boto3 calls.

    Raises:
        ValueError: an option is missing or has a wrong type (the message names it).
    """

    TYPE = "ec2"
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
        merged = merge_options(options, global_options)
        self.name = name
        self.options = opts = Ec2Options.parse(merged)
        self.where = f"EC2 {opts.region}" + (f" ({opts.endpoint_url})" if opts.endpoint_url else "")
        self.guard = Guard(name, self.where, merged, workers=executor_workers)
        self.breaker, self.timeout = self.guard.breaker, self.guard.timeout
        session = boto3.session.Session(region_name=opts.region, **opts.credentials.session_kwargs())
        config = Config(
            retries={"total_max_attempts": 1},  # throttling is retried by Ec2Api, the rest by the back-off
            connect_timeout=min(5.0, self.timeout.maximum),
            read_timeout=self.timeout.maximum,
            max_pool_connections=executor_workers,
        )
        client = session.client("ec2", endpoint_url=opts.endpoint_url or None, config=config)
        self.api = Ec2Api(
            client,
            self.where,
            key_prefix,
            throttle=(opts.throttle_retries, opts.throttle_base),
            quota_pause=opts.quota_pause,
            wait=(opts.wait_poll, opts.task_timeout),
        )
        self.metrics = metrics
        self.redis = redis
        self.counts_key = f"{key_prefix}:ec2:{name}:instances"
        self._paused_until = 0.0

    def __repr__(self) -> str:
        return f"Ec2Provider({self.name!r}, {self.where!r})"

    async def _call(self, fn: Callable[[], T], *, task: bool = False) -> T:
        def work(started: Started) -> T:
            started()
            return fn()

        return await self.guard.call(work, task_timeout=self.options.task_timeout if task else None)

    def _spec(self, pool: PoolTarget) -> PoolSpec:
        try:
            return self.options.spec(pool.name, pool.template, pool.options)
        except ValueError as exc:
            raise ProviderError(str(exc), permanent=True) from exc

    def _info(self, vm: str, instance: Mapping[str, Any]) -> VmInfo:
        return VmInfo(
            name=vm,
            hostname="",  # EC2 names hosts after their IP: never the VM name, so no mismatch check
            ip=str(instance.get("PrivateIpAddress") or ""),
            host=str(instance.get("Placement", {}).get("AvailabilityZone", "")),
            powered_on=instance.get("State", {}).get("Name") in ("pending", "running"),
            template=str(instance.get("ImageId", "")),
        )

    # the Provider protocol ------------------------------------------------------------------------------------

    async def create_vm(self, pool: PoolTarget, vm: str) -> VmInfo:
        """Launch ``vm`` (or adopt the instance tagged with its name). After a quota or capacity error every
        create fails at once, without asking EC2, for ``quota_pause`` seconds (``retry_in`` says how long
        is left, and the pools' clone back-off waits that long)."""
        left = self._paused_until - time.monotonic()
        if left > 0:
            raise QuotaExceeded(
                f"{self.where}: cloning paused for {left:.0f} s after a quota error", retry_in=left
            )
        spec = self._spec(pool)
        try:
            instance = await self._call(lambda: self.api.launch(pool.name, vm, spec))
        except QuotaExceeded as exc:
            self._paused_until = time.monotonic() + exc.retry_in
            raise
        return self._info(vm, instance)

    async def destroy_vm(self, pool: PoolTarget, vm: str) -> None:
        await self._call(lambda: self.api.terminate(pool.name, vm))

    async def get_vm(self, pool: PoolTarget, vm: str) -> VmInfo | None:
        found = await self._call(lambda: self.api.find(pool.name, vm))
        return None if found is None else self._info(vm, found)

    async def list_vms(self, pool: PoolTarget) -> list[str]:
        instances = await self._call(lambda: self.api.instances(pool=pool.name))
        names = sorted({t["Value"] for i in instances for t in i.get("Tags", []) if t["Key"] == TAG_VM})
        await self._count(pool.name, len(instances))
        return names

    async def vm_ready(self, pool: PoolTarget, vm: str) -> bool:
        """Running, both status checks ``ok``, and (``ready_check_port``) a TCP connect to its private IP."""
        ip = await self._call(lambda: self.api.ready_ip(pool.name, vm))
        if ip is None or self.options.ready_check_port <= 0:
            return ip is not None
        port, timeout = self.options.ready_check_port, self.options.ready_check_timeout
        return await self.guard.run_blocking(lambda: port_open(ip, port, timeout))

    async def create_disk(self, pool: PoolTarget, vm: str, size_gb: int) -> None:
        await self._call(lambda: add_disk(self.api, pool.name, vm, size_gb), task=True)

    async def create_snapshot(self, pool: PoolTarget, vm: str, snapshot_name: str) -> None:
        await self._call(lambda: snapshot(self.api, pool.name, vm, snapshot_name))

    async def revert_snapshot(self, pool: PoolTarget, vm: str, snapshot_name: str) -> None:
        await self._call(lambda: revert(self.api, pool.name, vm, snapshot_name), task=True)

    async def migrate_vm(self, pool: PoolTarget, vm: str) -> str:
        """EC2 places instances itself: nothing moves; the instance's availability zone is reported."""
        found = await self._call(lambda: self.api.require(pool.name, vm))
        return self._info(vm, found).host

    async def tag_vm(self, pool: PoolTarget, vm: str, tags: Mapping[str, str]) -> None:
        """Add ``tags`` to the instance (the checkout user as ``token-user``, for cost reports)."""
        await self._call(lambda: self.api.tag(pool.name, vm, tags))

    async def purge_unconfigured(self, pools: list[PoolTarget], allowlist: list[str]) -> list[str]:
        """Terminate this installation's instances whose ``pool`` tag names no configured pool and is not
        allowlisted; returns their VM names."""
        keep = {p.name for p in pools} | set(allowlist)
        return await self._call(lambda: self.api.purge(keep), task=True)

    async def instance_counts(self) -> dict[str, int]:
        """This installation's live instances per pool (all of them, configured pools or not)."""
        return await self._call(self.api.live_by_pool)

    async def close(self) -> None:
        self.guard.shutdown()

    async def _count(self, pool: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.gauge(f"ec2.{metric_segment(self.name)}.instances.{metric_segment(pool)}", n)
        if self.redis is not None:
            with contextlib.suppress(RedisError):  # else the figure waits for the next inventory
                await self.redis.hset(self.counts_key, pool, n)
