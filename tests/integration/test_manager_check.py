"""``vmpooler manager --check``, the manager role's health answer: healthy while a manager of this
host heartbeats and every pool has a live manager; one line and exit 1 otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml

from commands.manager import LEASE_MS, Manager
from commands.pool import PoolCommands
from events import Keys, PoolConfigured
from tests.e2e._harness import ROOT, VMPOOLER, until
from vmpooler.manager_check import manager_health

HOST = "host-a"
POOLS = ["p1", "p2"]


def manager(redis: aioredis.Redis, keys: Keys, holder: str) -> Manager:
    settings = {
        pool: PoolConfigured(size=0, template="t", clone_limit=1, ready_ttl=60, timeout=15) for pool in POOLS
    }

    def no_targets(pool: str) -> Any:
        raise AssertionError(pool)  # ticks of empty pools never ask the provider

    return Manager(PoolCommands(redis, keys), keys, settings, no_targets, holder=holder)


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_healthy_while_a_manager_of_this_host_holds_the_pools(
    redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    health = await manager_health(redis, keys, POOLS, host=HOST, now_ms=now_ms())
    assert (health.ok, health.line) == (
        False,
        f"no live manager on {HOST} (no heartbeat; live means within 15 s)",
    )

    ours = manager(redis, keys, f"{HOST}:1:aaaaaa")
    await ours.tick()
    health = await manager_health(redis, keys, POOLS, host=HOST, now_ms=now_ms())
    assert (health.ok, health.line) == (True, f"manager {HOST}:1:aaaaaa is live and holds 2 of 2 pools")
    # another host's check does not count our manager as its own
    assert not (await manager_health(redis, keys, POOLS, host="host-b", now_ms=now_ms())).ok

    later = now_ms() + LEASE_MS + 5000  # our manager stopped renewing
    health = await manager_health(redis, keys, POOLS, host=HOST, now_ms=later)
    assert not health.ok
    assert health.line.startswith(f"no live manager on {HOST} (last heartbeat 20 s ago")


async def test_unhealthy_while_a_pool_has_no_live_manager(redis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await manager(redis, keys, f"{HOST}:1:aaaaaa").lease.hold(keys.lease("p1", "manager"))
    await redis.zadd(keys.members("manager"), {f"{HOST}:1:aaaaaa": now_ms()})
    await redis.set(keys.lease("p2", "manager"), "gone-host:9:zzzzzz", px=LEASE_MS)  # a dead holder's lease
    health = await manager_health(redis, keys, POOLS, host=HOST, now_ms=now_ms())
    assert (health.ok, health.line) == (
        False,
        f"manager {HOST}:1:aaaaaa is live, but no live manager holds p2",
    )

    other = manager(redis, keys, "host-b:2:bbbbbb")  # another host's manager takes what is free
    await redis.delete(keys.lease("p2", "manager"))
    await other.tick()
    health = await manager_health(redis, keys, POOLS, host=HOST, now_ms=now_ms())
    assert (health.ok, health.line) == (True, f"manager {HOST}:1:aaaaaa is live and holds 1 of 2 pools")


def test_the_check_follows_a_running_manager_process(tmp_path: Path, redis_url: str, prefix: str) -> None:
    config = tmp_path / "vmpooler.yaml"
    config.write_text(
        f":redis:\n  url: '{redis_url}'\n  prefix: '{prefix}'\n:pools:\n  - name: p\n    template: 't/p'\n    size: 1\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}

    def check() -> subprocess.CompletedProcess[str]:
        argv = [VMPOOLER, "--config", str(config), "manager", "--check"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)

    before = check()
    assert before.returncode == 1
    assert (
        before.stderr
        == f"vmpooler: unhealthy: no live manager on {socket.gethostname()} (no heartbeat; live means within 15 s)\n"
    )
    log = (tmp_path / "manager.log").open("wb")
    proc = subprocess.Popen([VMPOOLER, "--config", str(config), "manager"], env=env, stdout=log, stderr=log)
    try:
        healthy = until(lambda: (c := check()).returncode == 0 and c, what="the manager to be healthy")
        assert healthy.stdout.endswith(" is live and holds 1 of 1 pools\n")
        assert healthy.stdout.startswith(f"manager {socket.gethostname()}:{proc.pid}:")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    after = check()  # a clean stop gives the pools and the membership up at once
    assert after.returncode == 1
    assert after.stderr.startswith("vmpooler: unhealthy: no live manager on ")


def test_compose_probes_the_manager_with_the_check() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert compose["services"]["manager"]["healthcheck"]["test"] == ["CMD", "vmpooler", "manager", "--check"]
    assert compose["services"]["manager"]["command"] == ["manager"]
