"""The vSphere provider's circuit breaker, call timeout and reconnects against a vcsim that goes away.

Each test runs its own vcsim (see ``tests/vcsim``; skipped when it cannot be built). The breaker is configured
small (threshold 3, timeout 0.5 s, 2 half-open successes) so a test takes about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")

from commands.provider import PoolTarget, ProviderError
from providers.resilience import BreakerState
from providers.vsphere import VsphereProvider
from tests.vcsim import VcsimServer, build_vcsim, last_build_error, start_vcsim

POOL = PoolTarget(name="fail-pool", template="templates/none", options={"folder": "vmpooler-fail/fail-pool"})
CALL_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def binary() -> Path:
    built = build_vcsim()
    if built is None:
        pytest.skip(f"vcsim cannot be built: {last_build_error()}")
    return built


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def _options(server: VcsimServer, **extra: Any) -> dict[str, Any]:
    return {
        "server": server.host,
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "insecure": True,
        "ready_check_port": 0,
        "connection_pool_size": 2,
        "connection_pool_timeout": 5,
        "circuit_breaker_failure_threshold": 3,
        "circuit_breaker_timeout": 0.5,
        "circuit_breaker_half_open_attempts": 2,
        "connection_pool_timeout_min": 1,
        "connection_pool_timeout_max": 10,
        "connection_pool_timeout_initial": CALL_TIMEOUT,
        **extra,
    }


@pytest.fixture
async def providers() -> AsyncIterator[list[VsphereProvider]]:
    made: list[VsphereProvider] = []
    yield made
    for provider in made:
        await provider.close()


async def test_vcenter_going_away_opens_then_closes_the_circuit(
    binary: Path, providers: list[VsphereProvider]
) -> None:
    first = contextlib.ExitStack()
    server = first.enter_context(start_vcsim(0, binary=binary))
    try:
        provider = VsphereProvider("vsphere", _options(server), executor_workers=4)
        providers.append(provider)
        assert provider.breaker is not None
        for _ in range(3):
            assert await provider.list_vms(POOL) == []
        assert provider.breaker.state is BreakerState.CLOSED
    finally:
        first.close()  # vCenter goes away mid-run

    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            await provider.list_vms(POOL)
        assert not caught.value.permanent
        assert "circuit" not in str(caught.value)
    assert provider.breaker.state is BreakerState.OPEN

    started = time.monotonic()
    with pytest.raises(ProviderError, match="circuit breaker 'vsphere' is open") as caught:
        await provider.list_vms(POOL)
    fail_fast = time.monotonic() - started
    assert not caught.value.permanent
    assert fail_fast < 0.25  # the call timeout is 5 s

    with start_vcsim(server.port, binary=binary):  # a new vCenter on the same port: old sessions are unknown
        with pytest.raises(ProviderError, match="is open"):
            await provider.list_vms(POOL)  # still inside the breaker timeout
        await asyncio.sleep(0.55)
        assert await provider.list_vms(POOL) == []  # half-open trial call: re-login, succeeds
        assert provider.breaker.state is BreakerState.HALF_OPEN
        assert await provider.list_vms(POOL) == []
        assert provider.breaker.state is BreakerState.CLOSED
        assert provider.breaker.failures == 0


async def test_half_open_failure_reopens(binary: Path, providers: list[VsphereProvider]) -> None:
    with start_vcsim(0, binary=binary) as server:
        provider = VsphereProvider("vsphere", _options(server), executor_workers=2)
        providers.append(provider)
        assert await provider.list_vms(POOL) == []
    assert provider.breaker is not None
    for _ in range(3):
        with pytest.raises(ProviderError):
            await provider.list_vms(POOL)
    await asyncio.sleep(0.55)
    with pytest.raises(ProviderError) as caught:
        await provider.list_vms(POOL)  # half-open trial against a vCenter still gone
    assert "circuit" not in str(caught.value)
    assert provider.breaker.state is BreakerState.OPEN
    with pytest.raises(ProviderError, match="is open"):
        await provider.list_vms(POOL)


async def test_slow_call_times_out_and_its_session_is_discarded(
    binary: Path, providers: list[VsphereProvider]
) -> None:
    with start_vcsim(0, binary=binary) as server:
        provider = VsphereProvider(
            "vsphere",
            _options(
                server,
                connection_pool_timeout_min=0.1,
                connection_pool_timeout_initial=0.3,
                connection_pool_size=1,
            ),
            executor_workers=2,
        )
        providers.append(provider)
        assert await provider.list_vms(POOL) == []
        assert provider.connections.open_sessions == 1
        finished = threading.Event()

        def slow(ops: Any) -> None:
            time.sleep(1.0)
            finished.set()

        started = time.monotonic()
        with pytest.raises(ProviderError, match=r"timed out after 0\.3 s") as caught:
            await provider._call(slow)
        assert time.monotonic() - started < 0.9
        assert not caught.value.permanent
        assert provider.connections.open_sessions == 0  # slot freed while the thread still runs
        assert provider.timeout.current == 0.1  # round(0.3 * 0.8) = 0, clamped to the minimum
        provider.timeout.initial = provider.timeout.maximum
        provider.timeout.reset()

        # The only slot is free again: a new session serves this call while the slow thread lingers.
        assert await provider.list_vms(POOL) == []
        assert await asyncio.get_running_loop().run_in_executor(None, finished.wait, 5)
        for _ in range(50):
            if provider.connections.discarded:
                break
            await asyncio.sleep(0.02)
        assert provider.connections.discarded == 1  # logged out, never lent again
        assert provider.connections.open_sessions == 1
        assert await provider.list_vms(POOL) == []


async def test_session_expiry_is_not_a_breaker_failure(
    binary: Path, providers: list[VsphereProvider]
) -> None:
    with start_vcsim(0, binary=binary) as server:
        provider = VsphereProvider("vsphere", _options(server, connection_pool_size=1), executor_workers=2)
        providers.append(provider)
        assert provider.breaker is not None
        for _ in range(4):
            assert await provider.list_vms(POOL) == []
            await provider._call(lambda ops: ops.si.content.sessionManager.Logout())
        assert await provider.list_vms(POOL) == []
        assert provider.breaker.state is BreakerState.CLOSED
        assert provider.breaker.failures == 0


async def test_permanent_errors_do_not_open_the_circuit(
    binary: Path, providers: list[VsphereProvider]
) -> None:
    with start_vcsim(0, binary=binary) as server:
        provider = VsphereProvider("vsphere", _options(server, password="wrong"), executor_workers=2)
        providers.append(provider)
        for _ in range(5):
            with pytest.raises(ProviderError) as caught:
                await provider.list_vms(POOL)
            assert caught.value.permanent
        assert provider.breaker is not None
        assert provider.breaker.state is BreakerState.CLOSED


async def test_breaker_can_be_disabled(binary: Path, providers: list[VsphereProvider]) -> None:
    with start_vcsim(0, binary=binary) as server:
        provider = VsphereProvider(
            "vsphere", _options(server, circuit_breaker_enabled=False), executor_workers=2
        )
        providers.append(provider)
        assert provider.breaker is None
        assert await provider.list_vms(POOL) == []
    for _ in range(5):
        with pytest.raises(ProviderError) as caught:
            await provider.list_vms(POOL)
        assert "circuit" not in str(caught.value)


async def test_task_calls_wait_for_task_timeout_not_the_adaptive_one(
    binary: Path, providers: list[VsphereProvider]
) -> None:
    with start_vcsim(0, binary=binary) as server:
        provider = VsphereProvider(
            "vsphere",
            _options(
                server, connection_pool_timeout_min=0.1, connection_pool_timeout_initial=0.3, task_timeout=5
            ),
            executor_workers=2,
        )
        providers.append(provider)

        def clone_that_takes_a_while(ops: Any) -> str:
            time.sleep(0.6)  # longer than the adaptive timeout (0.3 s): a real clone takes minutes
            return "done"

        assert await provider._call(clone_that_takes_a_while, task=True) == "done"
        assert provider.timeout.current == 0.3  # a task's duration teaches the adaptive timeout nothing
        with pytest.raises(ProviderError, match=r"timed out after 0\.3 s"):
            await provider._call(clone_that_takes_a_while)


PROTOCOL_CALLS: dict[str, Any] = {
    "create_vm": lambda p: p.create_vm(POOL, "vm1"),
    "destroy_vm": lambda p: p.destroy_vm(POOL, "vm1"),
    "get_vm": lambda p: p.get_vm(POOL, "vm1"),
    "list_vms": lambda p: p.list_vms(POOL),
    "vm_ready": lambda p: p.vm_ready(POOL, "vm1"),
    "create_disk": lambda p: p.create_disk(POOL, "vm1", 1),
    "create_snapshot": lambda p: p.create_snapshot(POOL, "vm1", "s"),
    "revert_snapshot": lambda p: p.revert_snapshot(POOL, "vm1", "s"),
    "migrate_vm": lambda p: p.migrate_vm(POOL, "vm1"),
    "purge_unconfigured": lambda p: p.purge_unconfigured([POOL], []),
}
NO_CALL = {"close", "tag_vm"}
"""Protocol methods that make no vCenter call (vSphere keeps no tags)."""


def test_the_table_covers_the_protocol() -> None:
    from commands.provider import Provider

    methods = {
        name for name in vars(Provider) if not name.startswith("_") and callable(getattr(Provider, name))
    }
    assert methods - NO_CALL == set(PROTOCOL_CALLS)


@pytest.mark.parametrize("method", sorted(PROTOCOL_CALLS))
async def test_every_protocol_call_goes_through_the_breaker(
    method: str, providers: list[VsphereProvider]
) -> None:
    # nothing listens on port 1: a call that got past the breaker would fail with a connection error
    provider = VsphereProvider("vsphere", {"server": "127.0.0.1", "port": 1, "circuit_breaker_timeout": 60})
    providers.append(provider)
    assert provider.breaker is not None
    for _ in range(provider.breaker.failure_threshold):
        provider.breaker.record_failure()
    with pytest.raises(ProviderError, match="circuit breaker 'vsphere' is open") as caught:
        await PROTOCOL_CALLS[method](provider)
    assert not caught.value.permanent
    assert provider.connections.open_sessions == 0


UNREACHABLE: dict[str, Any] = {
    "create_vm": lambda p: p.create_vm(POOL, "vm1"),  # a task: it would have task_timeout once started
    "list_vms": lambda p: p.list_vms(POOL),
}


@pytest.mark.parametrize("method", sorted(UNREACHABLE))
async def test_a_refused_vcenter_fails_calls_within_the_timeout_naming_server_and_cause(
    method: str, providers: list[VsphereProvider], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: with nothing listening, calls waited 30 s (three logins 10 and 20 s apart), clones
    for task_timeout, and the error was 'vSphere call timed out after 30 s', naming no server."""
    options = {"server": "127.0.0.1", "port": 1, "connection_pool_timeout_min": 0.5}
    provider = VsphereProvider("vsphere", {**options, "connection_pool_timeout_initial": 1})
    providers.append(provider)
    caplog.set_level("WARNING", logger="providers.vsphere.connection")
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await asyncio.wait_for(UNREACHABLE[method](provider), 10)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith("vSphere 127.0.0.1:1: connection refused")
    assert "no session within 1 s" in message
    assert "timed out" not in message
    assert not caught.value.permanent
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("vSphere 127.0.0.1:1: connection refused") and "attempt 1 of 3" in m for m in logged
    )
