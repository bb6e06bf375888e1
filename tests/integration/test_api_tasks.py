"""``POST /api/v3/vm/<hostname>/disk/<size>``, ``/snapshot`` and ``/snapshot/<name>``: the request
events reach the VM's log, and bad requests leave everything alone (reference §1.2)."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
import redis.asyncio as aioredis

import events as ev
from commands.pool import Meta
from commands.settings import Settings
from tests.integration._api import DOMAIN, ApiEnv, api_env, body, make_settings
from web.routes_tasks import snapshot_name

Env = Callable[[Settings], AbstractAsyncContextManager[ApiEnv]]

SETTINGS = make_settings(
    [
        {"name": "pool1", "size": 1, "dns_plugin": "example"},
        {"name": "pool2", "size": 1},
    ]
)
TOKEN_ALPHABET = re.compile(r"[a-y][a-z0-9]{31}")


@pytest.fixture
def env(redis: aioredis.Redis, redis_url: str, prefix: str) -> Env:
    return lambda settings: api_env(redis, redis_url, prefix, settings)


async def last_event(api: ApiEnv, pool: str) -> ev.Recorded:
    return (await api.events(pool))[-1]


@pytest.mark.parametrize("fqdn", [False, True])
async def test_disk_request_is_202_and_appends_the_request(env: Env, fqdn: bool) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        hostname = f"{vm}.{DOMAIN}" if fqdn else vm
        response = await api.client.post(f"/api/v3/vm/{hostname}/disk/8")
        assert response.status_code == 202
        assert response.text == f'{{\n  "ok": true,\n  "{vm}": {{\n    "disk": "+8gb"\n  }}\n}}'
        last = await last_event(api, "pool1")
        assert (last.vm, last.event, last.actor) == (vm, ev.VmDiskRequested(size_gb=8), "api")


async def test_disk_request_on_a_running_vm(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200
        response = await api.client.post(f"/api/v3/vm/{vm}/disk/0002048")
        assert (response.status_code, body(response)) == (202, {"ok": True, vm: {"disk": "+2048gb"}})
        assert (await last_event(api, "pool1")).event == ev.VmDiskRequested(size_gb=2048)


@pytest.mark.parametrize(
    ("size", "error"),
    [
        ("0", "Disk size must be at least 1"),
        ("2049", "Disk size must be at most 2048"),
        ("99999999999999999999999", "Disk size must be at most 2048"),
        ("-1", "Disk size must be a valid integer"),
        ("8gb", "Disk size must be a valid integer"),
        ("1.5", "Disk size must be a valid integer"),
    ],
)
async def test_bad_disk_size_is_400_and_changes_nothing(env: Env, size: str, error: str) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        before = await api.snapshot()
        response = await api.client.post(f"/api/v3/vm/{vm}/disk/{size}")
        assert (response.status_code, body(response)) == (400, {"ok": False, "error": error})
        assert await api.snapshot() == before


@pytest.mark.parametrize(
    ("hostname", "error"),
    [
        ("bad_host", "Invalid hostname format"),
        ("-vm", "Invalid hostname format"),
        ("a" * 64, "Invalid hostname format"),
        (".".join(["a" * 60] * 5), "Hostname too long"),
    ],
)
async def test_bad_hostname_for_disk_is_400_and_changes_nothing(env: Env, hostname: str, error: str) -> None:
    async with env(SETTINGS) as api:
        await api.seed("pool1", 1)
        before = await api.snapshot()
        response = await api.client.post(f"/api/v3/vm/{hostname}/disk/8")
        assert (response.status_code, body(response)) == (400, {"ok": False, "error": error})
        assert await api.snapshot() == before


async def test_hostname_is_checked_before_size(env: Env) -> None:
    async with env(SETTINGS) as api:
        response = await api.client.post("/api/v3/vm/bad_host/disk/0")
        assert (response.status_code, body(response)) == (
            400,
            {"ok": False, "error": "Invalid hostname format"},
        )


def test_snapshot_names_use_the_token_alphabet() -> None:
    names = [snapshot_name() for _ in range(2000)]
    assert all(TOKEN_ALPHABET.fullmatch(n) for n in names)
    assert len(set(names)) == len(names)
    # vmpooler draws the first character from a..y only (o[rand(25)]).
    assert {n[0] for n in names} <= set("abcdefghijklmnopqrstuvwxy")


@pytest.mark.parametrize("path", ["disk/8", "snapshot", "snapshot/somesnap"])
async def test_unknown_vm_is_404(env: Env, path: str) -> None:
    async with env(SETTINGS) as api:
        await api.seed("pool1", 1)
        before = await api.snapshot()
        response = await api.client.post(f"/api/v3/vm/nosuchvm/{path}")
        assert (response.status_code, response.text) == (404, '{\n  "ok": false\n}')
        assert await api.snapshot() == before


@pytest.mark.parametrize("path", ["disk/8", "snapshot"])
async def test_vm_not_booting_ready_or_running_is_404(env: Env, path: str) -> None:
    """Divergence: vmpooler queues the task for a VM in any state (it fails later); we refuse it."""
    async with env(SETTINGS) as api:
        await api.seed("pool1", 0, size=1)
        [cloning] = await api.in_state("pool1", "cloning")
        [ready] = await api.seed("pool2", 1)
        assert (await api.client.post("/api/v3/vm/pool2")).status_code == 200
        assert (await api.client.delete(f"/api/v3/vm/{ready}")).status_code == 200
        before = await api.snapshot()
        for vm in (cloning, ready):
            response = await api.client.post(f"/api/v3/vm/{vm}/{path}")
            assert (response.status_code, body(response)) == (404, {"ok": False}), vm
        assert await api.snapshot() == before


async def test_snapshot_request_is_202_with_a_new_name_in_the_log(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        first = await api.client.post(f"/api/v3/vm/{vm}.{DOMAIN}/snapshot")
        second = await api.client.post(f"/api/v3/vm/{vm}/snapshot")
        assert (first.status_code, second.status_code) == (202, 202)
        names = []
        for response in (first, second):
            got = body(response)
            assert list(got) == ["ok", vm]
            assert got["ok"] is True
            assert list(got[vm]) == ["snapshot"]
            names.append(got[vm]["snapshot"])
            assert TOKEN_ALPHABET.fullmatch(names[-1]), names[-1]
        assert names[0] != names[1]
        requested = [r for r in await api.events("pool1") if isinstance(r.event, ev.VmSnapshotRequested)]
        assert [(r.vm, r.event.name) for r in requested] == [(vm, n) for n in names]


async def test_revert_to_a_known_snapshot_is_202_and_appends_the_request(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        await api.commands.append("pool1", [(vm, ev.VmSnapshotTaken(name="snap1"))], Meta("worker"))
        await api.project()
        response = await api.client.post(f"/api/v3/vm/{vm}.{DOMAIN}/snapshot/snap1")
        assert (response.status_code, response.text) == (202, '{\n  "ok": true\n}')
        last = await last_event(api, "pool1")
        assert (last.vm, last.event) == (vm, ev.VmRevertRequested(name="snap1"))


async def test_revert_to_an_unknown_snapshot_is_404_and_changes_nothing(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        await api.commands.append("pool1", [(vm, ev.VmSnapshotTaken(name="snap1"))], Meta("worker"))
        await api.project()
        # A requested snapshot is not there until the worker has taken it.
        assert (await api.client.post(f"/api/v3/vm/{vm}/snapshot")).status_code == 202
        pending = (await last_event(api, "pool1")).event
        assert isinstance(pending, ev.VmSnapshotRequested)
        before = await api.snapshot()
        for name in ("snap2", pending.name):
            response = await api.client.post(f"/api/v3/vm/{vm}/snapshot/{name}")
            assert (response.status_code, body(response)) == (404, {"ok": False}), name
        assert await api.snapshot() == before


async def test_revert_on_a_returned_vm_is_404(env: Env) -> None:
    async with env(SETTINGS) as api:
        [vm] = await api.seed("pool1", 1)
        await api.commands.append("pool1", [(vm, ev.VmSnapshotTaken(name="snap1"))], Meta("worker"))
        assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200
        assert (await api.client.delete(f"/api/v3/vm/{vm}")).status_code == 200
        await api.project()
        before = await api.snapshot()
        response = await api.client.post(f"/api/v3/vm/{vm}/snapshot/snap1")
        assert (response.status_code, body(response)) == (404, {"ok": False})
        assert await api.snapshot() == before


async def test_get_on_task_paths_is_405(env: Env) -> None:
    async with env(SETTINGS) as api:
        response = await api.client.get("/api/v3/vm/somevm/snapshot")
        assert (response.status_code, body(response)) == (405, {"ok": False})
