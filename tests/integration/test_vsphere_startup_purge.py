"""The manager's startup purge (vmpooler's ``purge_unconfigured_resources``) through the composition root,
with a vSphere provider against vcsim: configured pool folders stay, unconfigured siblings go, allowlisted
ones stay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")

from commands.provider import PoolTarget
from commands.purge import purge_unconfigured
from providers.vsphere import VsphereProvider
from tests.contract.provider_contract import VmTracker
from tests.vcsim import (
    TEMPLATE,
    VcsimServer,
    vcsim_with_template,
)
from vmpooler.config import parse_settings
from vmpooler.redis_client import RedisHandle
from vmpooler.wiring import Service


async def purge(service: Service) -> None:
    """What the manager role runs at startup."""
    await purge_unconfigured(service.settings, service.providers, map(service.targets, service.pools))


@pytest.fixture(scope="module")
def vcsim() -> Iterator[VcsimServer]:
    with vcsim_with_template() as server:
        yield server


def _document(
    server: VcsimServer, prefix: str, config: dict[str, Any], provider: dict[str, Any]
) -> dict[str, Any]:
    return {
        "config": config,
        "redis": {"prefix": prefix},
        "providers": {
            "vsphere": {
                "server": server.host,
                "port": server.port,
                "username": server.username,
                "password": server.password,
                "insecure": True,
                "create_folders": True,
                **provider,
            }
        },
        "pools": [
            {"name": "kept", "template": TEMPLATE, "size": 0, "provider": "vsphere", "folder": "sp/kept"},
        ],
    }


@pytest.fixture
async def service_for(vcsim: VcsimServer, redis: aioredis.Redis, prefix: str) -> AsyncIterator[Any]:
    made: list[Service] = []

    def build(config: dict[str, Any], provider: dict[str, Any]) -> Service:
        settings = parse_settings(_document(vcsim, prefix, config, provider), env={})
        # a global flag purges the (always loaded) dummy provider too, whose VMs live in Redis
        service = Service(settings, RedisHandle(redis, "redis://test"))
        made.append(service)
        return service

    yield build
    for service in made:
        for provider in service.providers.values():
            await provider.close()


def _sibling(name: str) -> PoolTarget:
    return PoolTarget(name=name, template=TEMPLATE, options={"folder": f"sp/{name}"})


async def _leftovers(provider: VsphereProvider) -> tuple[VmTracker, dict[str, str]]:
    tracker = VmTracker(provider)
    made = {}
    for name in ("kept", "stray", "allowed"):
        vm, _ = await tracker.create(_sibling(name))
        made[name] = vm
    return tracker, made


@pytest.mark.parametrize("where", ["global", "provider"])
async def test_startup_purge_removes_unconfigured_folders_but_not_allowlisted(
    service_for: Any, where: str
) -> None:
    flags = {"purge_unconfigured_resources": True, "resources_allowlist": ["allowed"]}
    service = service_for(flags if where == "global" else {}, flags if where == "provider" else {})
    provider = service.providers["vsphere"]
    assert isinstance(provider, VsphereProvider)
    tracker, made = await _leftovers(provider)
    try:
        await purge(service)
        assert await provider.get_vm(_sibling("kept"), made["kept"]) is not None
        assert await provider.get_vm(_sibling("allowed"), made["allowed"]) is not None
        assert await provider.get_vm(_sibling("stray"), made["stray"]) is None
    finally:
        await tracker.cleanup()


async def test_no_purge_unless_asked(service_for: Any) -> None:
    service = service_for({}, {})
    provider = service.providers["vsphere"]
    assert isinstance(provider, VsphereProvider)
    tracker, made = await _leftovers(provider)
    try:
        await purge(service)
        assert await provider.get_vm(_sibling("stray"), made["stray"]) is not None
    finally:
        await tracker.cleanup()
