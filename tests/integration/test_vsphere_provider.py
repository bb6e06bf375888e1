"""The vSphere provider against govmomi's vcsim: the provider contract, then vSphere-specific failures.

vcsim is built from Debian's ``golang-go`` and ``golang-github-vmware-govmomi-dev`` (see ``tests/vcsim``);
without them the whole module is skipped. One vcsim serves the module; a template ``templates/debian-12``
is cloned from vcsim's stock VM ``DC0_H0_VM0`` first. vcsim has no real guests, so clones get their guest
IP from vcsim's ``SET.guest.ipAddress`` extraConfig key and the port check is off unless a test turns it on.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")


from commands.provider import PoolTarget, Provider, ProviderError
from providers.vsphere import VsphereProvider
from tests.contract.provider_contract import ProviderContract, VmTracker, wait_ready
from tests.vcsim import (
    TEMPLATE,
    VcsimServer,
    provider_options,
    vcsim_with_template,
)

BASE = "vmpooler-ct"


def _pool(name: str) -> PoolTarget:
    return PoolTarget(name=name, template=TEMPLATE, options={"folder": f"{BASE}/{name}"})


@pytest.fixture(scope="module")
def vcsim() -> Iterator[VcsimServer]:
    with vcsim_with_template() as server:
        yield server


def _options(server: VcsimServer, **extra: Any) -> dict[str, Any]:
    defaults = {"connection_pool_timeout": 10, "clone_extra_config": {"SET.guest.ipAddress": "127.0.0.1"}}
    return provider_options(server, **{**defaults, **extra})


@pytest.fixture
async def make(vcsim: VcsimServer) -> AsyncIterator[Any]:
    made: list[VsphereProvider] = []

    def build(**extra: Any) -> VsphereProvider:
        provider = VsphereProvider("vsphere", _options(vcsim, **extra), executor_workers=4)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


class TestVsphereProviderContract(ProviderContract):
    ready_timeout = 10.0

    @pytest.fixture
    def provider(self, make: Any) -> VsphereProvider:
        provider: VsphereProvider = make()
        return provider

    @pytest.fixture
    def pool(self) -> PoolTarget:
        return _pool("ct-pool")

    @pytest.fixture
    def other_pool(self, pool: PoolTarget) -> PoolTarget:
        return _pool(f"{pool.name}-other")

    @pytest.fixture
    def third_pool(self, pool: PoolTarget) -> PoolTarget:
        return _pool(f"{pool.name}-gone")


async def test_bad_credentials_are_permanent(make: Any) -> None:
    provider = make(password="wrong")
    with pytest.raises(ProviderError) as caught:
        await provider.list_vms(_pool("ct-pool"))
    assert caught.value.permanent


async def test_missing_template_is_permanent(make: Any) -> None:
    provider = make()
    pool = msgspec.structs.replace(_pool("ct-notemplate"), template="templates/no-such-template")
    with pytest.raises(ProviderError) as caught:
        await provider.create_vm(pool, "ctnotemplate")
    assert caught.value.permanent
    assert await provider.get_vm(pool, "ctnotemplate") is None


async def test_missing_datastore_is_permanent(make: Any) -> None:
    provider = make()
    pool = _pool("ct-nodatastore")
    pool = msgspec.structs.replace(pool, options={**pool.options, "datastore": "NoSuchDS"})
    with pytest.raises(ProviderError) as caught:
        await provider.create_vm(pool, "ctnodatastore")
    assert caught.value.permanent


async def test_clone_sets_hostname_guestinfo_and_powers_on(make: Any) -> None:
    provider: VsphereProvider = make()
    pool = _pool("ct-guestinfo")
    tracker = VmTracker(provider)
    try:
        vm, info = await tracker.create(pool)
        assert info.powered_on
        assert info.ip == "127.0.0.1"
        assert info.host

        found = await provider._call(lambda ops: ops.find_vm(_target(provider, pool, vm)).config.extraConfig)
        values = {option.key: option.value for option in found}
        assert values["guestinfo.hostname"] == vm
    finally:
        await tracker.cleanup()


def _target(provider: VsphereProvider, pool: PoolTarget, vm: str) -> Any:
    from providers.vsphere.ops import Target

    return Target(provider._placement(pool), vm)


async def test_ready_check_port(make: Any) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pool = _pool("ct-readyport")
    provider: Provider = make(ready_check_port=port)
    tracker = VmTracker(provider)
    try:
        vm, _ = await tracker.create(pool)
        await wait_ready(provider, pool, vm, within=10)
        listener.close()
        assert not await provider.vm_ready(pool, vm)
    finally:
        listener.close()
        await tracker.cleanup()


async def test_reconnects_after_session_expiry(make: Any) -> None:
    provider: VsphereProvider = make(connection_pool_size=1)
    pool = _pool("ct-expiry")
    assert await provider.list_vms(pool) == []

    def logout(si: Any) -> None:
        si.content.sessionManager.Logout()

    await asyncio.get_running_loop().run_in_executor(None, provider.connections.run, logout)
    assert await provider.list_vms(pool) == []  # NotAuthenticated -> fresh login -> retried


async def test_connection_pool_checkout_times_out(make: Any) -> None:
    provider: VsphereProvider = make(connection_pool_size=1, connection_pool_timeout=0.2)
    held, release = threading.Event(), threading.Event()

    def hold(si: Any) -> None:
        held.set()
        release.wait(10)

    loop = asyncio.get_running_loop()
    holder = loop.run_in_executor(None, provider.connections.run, hold)
    try:
        assert await loop.run_in_executor(None, held.wait, 10)
        with pytest.raises(
            ProviderError, match=r"vSphere 127\.0\.0\.1:\d+: no connection free within 0\.2 s"
        ) as caught:
            await provider.list_vms(_pool("ct-poolwait"))
        assert not caught.value.permanent
    finally:
        release.set()
        await holder
    assert await provider.list_vms(_pool("ct-poolwait")) == []


async def test_untrusted_certificate_is_permanent(make: Any) -> None:
    provider = make(insecure=False)  # vcsim's certificate is self-signed
    with pytest.raises(ProviderError, match="certificate") as caught:
        await provider.list_vms(_pool("ct-pool"))
    assert caught.value.permanent


async def test_purge_never_sweeps_top_level_or_templates(make: Any) -> None:
    provider: VsphereProvider = make()
    top = PoolTarget(name="ct-toplevel", template=TEMPLATE, options={"folder": "ct-toplevel"})
    tracker = VmTracker(provider)
    try:
        vm, _ = await tracker.create(_pool("ct-sibling"))
        deleted = await provider.purge_unconfigured([top], [])
        assert deleted == []  # a top-level pool folder has no parent folder to sweep
        assert await provider.get_vm(_pool("ct-sibling"), vm) is not None
        template = PoolTarget(name="debian-12", template=TEMPLATE, options={"folder": "templates/debian-12"})
        deleted = await provider.purge_unconfigured([_pool("ct-sibling"), template], [])
        assert not any("templates" in item for item in deleted)
    finally:
        await tracker.cleanup()


async def test_snapshot_errors_name_the_cause(make: Any) -> None:
    provider: VsphereProvider = make()
    pool = _pool("ct-snapshots")
    tracker = VmTracker(provider)
    try:
        vm, _ = await tracker.create(pool)
        with pytest.raises(ProviderError, match="not found") as caught:  # reads vm.snapshot while it is unset
            await provider.revert_snapshot(pool, vm, "never-taken")
        assert caught.value.permanent
        await provider.create_snapshot(pool, vm, "first")
        await provider.create_snapshot(pool, vm, "second")
        with pytest.raises(ProviderError, match="already exists"):
            await provider.create_snapshot(pool, vm, "first")
        await provider.revert_snapshot(pool, vm, "first")
        await provider.revert_snapshot(pool, vm, "second")  # found below the root of the tree
    finally:
        await tracker.cleanup()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "'server' is required"),
        ({"server": "vc", "connection_pool_size": 0}, "connection_pool_size"),
        ({"server": "vc", "connection_pool_timeout": "soon"}, "connection_pool_timeout"),
        ({"server": "vc", "ready_check_port": "ssh"}, "ready_check_port"),
        ({"server": "vc", "clone_extra_config": ["a"]}, "clone_extra_config"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VsphereProvider("vsphere", options)
