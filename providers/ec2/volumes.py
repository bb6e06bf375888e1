"""EBS work for the EC2 provider: extra disks, snapshots of the root volume, and revert by replacing the root
volume with one made from a snapshot (blocking; run on the guard's worker threads)."""

from __future__ import annotations

from typing import Any

from commands.provider import ProviderError
from providers.ec2.api import TAG_POOL, TAG_PREFIX, TAG_SNAPSHOT, TAG_VM, Ec2Api

__all__ = ["add_disk", "revert", "snapshot"]


def _tags(api: Ec2Api, pool: str, vm: str, **extra: str) -> list[dict[str, str]]:
    tags = {"Name": vm, TAG_VM: vm, TAG_POOL: pool, TAG_PREFIX: api.prefix, **extra}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _volume_state(api: Ec2Api, volume_id: str) -> str:
    return str(api.call("describe_volumes", VolumeIds=[volume_id])["Volumes"][0]["State"])


def _attach(api: Ec2Api, instance_id: str, volume_id: str, device: str) -> None:
    api.call("attach_volume", VolumeId=volume_id, InstanceId=instance_id, Device=device)
    api.wait_for(f"volume {volume_id} attaching", lambda: _volume_state(api, volume_id) == "in-use")
    # the disk is the VM's: it goes when the instance is terminated (no orphaned, billed volumes)
    api.call(
        "modify_instance_attribute",
        InstanceId=instance_id,
        BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": True}}],
    )


def _new_volume(api: Ec2Api, pool: str, vm: str, zone: str, **source: Any) -> str:
    spec = [{"ResourceType": "volume", "Tags": _tags(api, pool, vm)}]
    volume_id = str(
        api.call("create_volume", AvailabilityZone=zone, TagSpecifications=spec, **source)["VolumeId"]
    )
    api.wait_for(
        f"volume {volume_id} becoming available", lambda: _volume_state(api, volume_id) == "available"
    )
    return volume_id


def add_disk(api: Ec2Api, pool: str, vm: str, size_gb: int) -> None:
    """Create a ``size_gb`` GiB EBS volume in the instance's zone and attach it at the next free device."""
    if size_gb < 1:
        raise ProviderError(f"disk size must be at least 1 GiB, got {size_gb}", permanent=True)
    instance = api.require(pool, vm)
    used = {m["DeviceName"] for m in instance.get("BlockDeviceMappings", [])}
    device = next((d for d in api.devices if d not in used), None)
    if device is None:
        raise ProviderError(f"{api.where}: VM {vm} has no free device for another disk", permanent=True)
    zone = instance["Placement"]["AvailabilityZone"]
    _attach(api, instance["InstanceId"], _new_volume(api, pool, vm, zone, Size=size_gb), device)


def _root(instance: dict[str, Any]) -> tuple[str, str]:
    device = instance.get("RootDeviceName") or "/dev/sda1"
    for mapping in instance.get("BlockDeviceMappings", []):
        if mapping["DeviceName"] == device:
            return device, str(mapping["Ebs"]["VolumeId"])
    raise ProviderError(f"instance {instance['InstanceId']} has no EBS root volume", permanent=True)


def _find_snapshot(api: Ec2Api, pool: str, vm: str, name: str) -> dict[str, Any] | None:
    filters = [
        {"Name": f"tag:{key}", "Values": [value]}
        for key, value in ((TAG_PREFIX, api.prefix), (TAG_POOL, pool), (TAG_VM, vm), (TAG_SNAPSHOT, name))
    ]
    found = api.call("describe_snapshots", OwnerIds=["self"], Filters=filters).get("Snapshots", [])
    return dict(found[0]) if found else None


def snapshot(api: Ec2Api, pool: str, vm: str, name: str) -> None:
    """Snapshot the root volume, tagged with the snapshot's name (a name is taken once per VM)."""
    instance = api.require(pool, vm)
    if _find_snapshot(api, pool, vm, name) is not None:
        raise ProviderError(f"snapshot {name!r} of VM {vm} already exists", permanent=True)
    _, volume_id = _root(instance)
    spec = [{"ResourceType": "snapshot", "Tags": _tags(api, pool, vm, **{TAG_SNAPSHOT: name})}]
    api.call(
        "create_snapshot", VolumeId=volume_id, Description=f"vmpooler {vm} {name}", TagSpecifications=spec
    )


def _instance_state(api: Ec2Api, instance_id: str) -> str:
    return str(api.reload(instance_id)["State"]["Name"])


def revert(api: Ec2Api, pool: str, vm: str, name: str) -> None:
    """Stop the instance, swap its root volume for one made from the snapshot, start it again and delete the
    old root volume."""
    instance = api.require(pool, vm)
    found = _find_snapshot(api, pool, vm, name)
    if found is None:
        raise ProviderError(f"snapshot {name!r} of VM {vm} not found", permanent=True)
    snap_id, instance_id = str(found["SnapshotId"]), str(instance["InstanceId"])

    def completed() -> bool:
        return bool(
            api.call("describe_snapshots", SnapshotIds=[snap_id])["Snapshots"][0]["State"] == "completed"
        )

    api.wait_for(f"snapshot {snap_id} completing", completed)
    device, old = _root(instance)
    if instance["State"]["Name"] != "stopped":
        api.call("stop_instances", InstanceIds=[instance_id])
        api.wait_for(
            f"instance {instance_id} stopping", lambda: _instance_state(api, instance_id) == "stopped"
        )
    new = _new_volume(api, pool, vm, instance["Placement"]["AvailabilityZone"], SnapshotId=snap_id)
    api.call("detach_volume", VolumeId=old, InstanceId=instance_id)
    api.wait_for(f"volume {old} detaching", lambda: _volume_state(api, old) == "available")
    _attach(api, instance_id, new, device)
    api.call("start_instances", InstanceIds=[instance_id])
    api.call("delete_volume", VolumeId=old)
