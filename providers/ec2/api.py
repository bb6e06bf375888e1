"""Blocking EC2 calls behind :class:`providers.ec2.Ec2Provider`, run on the guard's worker threads.

Instances are found by tags, never by a local record: ``vm_name`` (the VM), ``pool``, and
``vmpooler_prefix`` (the installation), so several installations share one account and a retried create
adopts the instance an earlier attempt launched (it also passes a ``ClientToken`` derived from the name,
which EC2 itself deduplicates on). Instances ``shutting-down`` or ``terminated`` are gone for the pools.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from commands.provider import ProviderError
from providers.ec2.options import PoolSpec

__all__ = ["LIVE_STATES", "TAG_POOL", "TAG_PREFIX", "TAG_USER", "TAG_VM", "Ec2Api", "QuotaExceeded"]

TAG_VM, TAG_POOL, TAG_PREFIX, TAG_USER, TAG_SNAPSHOT = (
    "vm_name",
    "pool",
    "vmpooler_prefix",
    "token-user",
    "snapshot_name",
)
LIVE_STATES = ("pending", "running", "stopping", "stopped")
_QUOTA = frozenset(
    {
        "InstanceLimitExceeded",
        "InsufficientInstanceCapacity",
        "VcpuLimitExceeded",
        "InsufficientCapacity",
        "VolumeLimitExceeded",
        "MaxIOPSLimitExceeded",
        "SnapshotLimitExceeded",
    }
)
_THROTTLED = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
_PERMANENT_PREFIXES = (
    "InvalidAMIID",
    "InvalidSubnetID",
    "InvalidGroup",
    "InvalidKeyPair",
    "InvalidParameter",
    "InvalidInstanceType",
    "InvalidBlockDeviceMapping",
    "Unsupported",
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
)
_DEVICES = tuple(f"/dev/sd{c}" for c in "fghijklmnop")


class QuotaExceeded(ProviderError):
    """EC2 refused for a quota or capacity reason: retryable later, not now (``retry_in``)."""


class Ec2Api:
    """EC2 calls for one provider. ``calls`` counts API requests (for the benchmark).

    Args:
        client: a boto3 EC2 client (thread-safe).
        where: how errors name the endpoint (``EC2 us-east-1``).
        prefix: the installation's key prefix, tagged on every instance.
        throttle: (retries, base seconds) for throttled requests: waits of up to ``base * 2**n``, at most 5 s.
        quota_pause: ``retry_in`` of quota errors.
        wait: (poll interval, deadline) of waits for EC2 state changes, in seconds.
    """

    def __init__(
        self,
        client: Any,
        where: str,
        prefix: str,
        *,
        throttle: tuple[int, float] = (4, 0.2),
        quota_pause: float = 300.0,
        wait: tuple[float, float] = (2.0, 900.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.where = where
        self.prefix = prefix
        self.throttle = throttle
        self.quota_pause = quota_pause
        self.wait = wait
        self._sleep = sleep
        self._lock = threading.Lock()
        self.calls = 0
        self.throttled = 0

    # one request ------------------------------------------------------------------------------------------

    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One EC2 request; throttled answers are retried with jittered exponential back-off."""
        retries, base = self.throttle
        for attempt in range(retries + 1):
            with self._lock:
                self.calls += 1
            try:
                reply: dict[str, Any] = getattr(self.client, operation)(**kwargs)
                return reply
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in _THROTTLED:
                    raise self.error(exc) from exc
                with self._lock:
                    self.throttled += 1
                if attempt < retries:
                    self._sleep(random.uniform(0, min(5.0, base * 2**attempt)))
            except BotoCoreError as exc:  # endpoint unreachable, read timeout, ...
                raise ProviderError(f"{self.where}: cannot reach the endpoint: {exc}") from exc
        raise ProviderError(
            f"{self.where}: {operation} throttled (RequestLimitExceeded) {retries + 1} times",
            retry_in=min(60.0, base * 2 ** (retries + 1)),
        )

    def error(self, exc: ClientError) -> ProviderError:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        text = f"{self.where}: {code}: {message}"
        if code in _QUOTA:
            return QuotaExceeded(f"{text} (cloning paused {self.quota_pause:g} s)", retry_in=self.quota_pause)
        return ProviderError(text, permanent=code.startswith(_PERMANENT_PREFIXES))

    def code_of(self, exc: BaseException) -> str:
        cause = exc.__cause__
        return str(cause.response.get("Error", {}).get("Code", "")) if isinstance(cause, ClientError) else ""

    def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        poll, limit = self.wait
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                raise ProviderError(f"{self.where}: {what} did not happen within {limit:g} s")
            self._sleep(poll)

    # lookups ----------------------------------------------------------------------------------------------

    def _filters(self, **tags: str) -> list[dict[str, Any]]:
        found = [{"Name": f"tag:{TAG_PREFIX}", "Values": [self.prefix]}]
        found += [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        return [*found, {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Filters": self._filters(**tags)}
        while True:
            reply = self.call("describe_instances", **kwargs)
            found += [i for r in reply.get("Reservations", []) for i in r.get("Instances", [])]
            if not reply.get("NextToken"):
                return found
            kwargs["NextToken"] = reply["NextToken"]

    def find(self, pool: str, vm: str) -> dict[str, Any] | None:
        found = self.instances(**{TAG_POOL: pool, TAG_VM: vm})
        return found[0] if found else None

    def require(self, pool: str, vm: str) -> dict[str, Any]:
        found = self.find(pool, vm)
        if found is None:
            raise ProviderError(f"{self.where}: VM {vm} does not exist in pool {pool}", permanent=True)
        return found

    def reload(self, instance_id: str) -> dict[str, Any]:
        reply = self.call("describe_instances", InstanceIds=[instance_id])
        return dict(reply["Reservations"][0]["Instances"][0])

    # operations -------------------------------------------------------------------------------------------

    def launch(self, pool: str, vm: str, spec: PoolSpec) -> dict[str, Any]:
        """The instance of ``vm``: the one found by its tags (adopted), else a new one."""
        found = self.find(pool, vm)
        if found is not None:
            return found
        tags = {**spec.tags, "Name": vm, TAG_VM: vm, TAG_POOL: pool, TAG_PREFIX: self.prefix}
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        request: dict[str, Any] = {
            "ImageId": spec.image_id,
            "InstanceType": spec.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": f"{self.prefix}-{vm}"[:64],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
        }
        if spec.zone:
            request["Placement"] = {"AvailabilityZone": spec.zone}
        if spec.subnet_id:
            request["SubnetId"] = spec.subnet_id
        if spec.security_group_ids:
            request["SecurityGroupIds"] = list(spec.security_group_ids)
        if spec.key_name:
            request["KeyName"] = spec.key_name
        if spec.volume_size:
            request["BlockDeviceMappings"] = self._root_mapping(spec)
        return dict(self.call("run_instances", **request)["Instances"][0])

    def _root_mapping(self, spec: PoolSpec) -> list[dict[str, Any]]:
        images = self.call("describe_images", ImageIds=[spec.image_id]).get("Images", [])
        if not images:
            raise ProviderError(f"{self.where}: image {spec.image_id} not found", permanent=True)
        root = images[0].get("RootDeviceName") or "/dev/sda1"
        return [{"DeviceName": root, "Ebs": {"VolumeSize": spec.volume_size, "DeleteOnTermination": True}}]

    def terminate(self, pool: str, vm: str) -> None:
        for instance in self.instances(**{TAG_POOL: pool, TAG_VM: vm}):
            self._terminate(instance["InstanceId"])

    def _terminate(self, instance_id: str) -> None:
        try:
            self.call("terminate_instances", InstanceIds=[instance_id])
        except ProviderError as exc:
            if not self.code_of(exc).startswith("InvalidInstanceID.NotFound"):
                raise

    def ready_ip(self, pool: str, vm: str) -> str | None:
        """The private IP of a running instance whose status checks pass, else ``None``."""
        found = self.find(pool, vm)
        if found is None or found.get("State", {}).get("Name") != "running":
            return None
        statuses = self.call("describe_instance_status", InstanceIds=[found["InstanceId"]])
        for status in statuses.get("InstanceStatuses", []):
            checks = (status.get("InstanceStatus", {}), status.get("SystemStatus", {}))
            if all(c.get("Status") == "ok" for c in checks):
                return str(found.get("PrivateIpAddress") or "") or None
        return None

    def tag(self, pool: str, vm: str, tags: Mapping[str, str]) -> None:
        instance = self.require(pool, vm)
        self.call(
            "create_tags",
            Resources=[instance["InstanceId"]],
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    def purge(self, keep: set[str]) -> list[str]:
        """Terminate this installation's instances of pools not in ``keep``; returns their VM names."""
        deleted: list[str] = []
        for instance in self.instances():
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if tags.get(TAG_POOL, "") in keep:
                continue
            self._terminate(instance["InstanceId"])
            deleted.append(tags.get(TAG_VM) or instance["InstanceId"])
        return sorted(deleted)

    def live_by_pool(self) -> dict[str, int]:
        """This installation's instances that are not shutting down or terminated, counted per pool."""
        counts: dict[str, int] = {}
        for instance in self.instances():
            pool = next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == TAG_POOL), "")
            counts[pool] = counts.get(pool, 0) + 1
        return counts

    @property
    def devices(self) -> tuple[str, ...]:
        return _DEVICES
