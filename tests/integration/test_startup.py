"""Start-up while Redis is unreachable: every role waits for it (bounded, logged), then runs, or
stops with one line naming the server and the cause (issue 9)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

from commands.handlers import Handlers
from commands.pool import PoolCommands
from commands.worker import Worker
from events import Keys
from tests.e2e._harness import VMPOOLER, http, until
from vmpooler.redis_server import RedisServer, free_port

_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}


def _config(tmp_path: Path, port: int, prefix: str = "vmpooler") -> Path:
    config = tmp_path / "vmpooler.yaml"
    config.write_text(
        f"---\n:redis:\n  url: redis://127.0.0.1:{port}/0\n  prefix: {prefix}\n"
        ":providers:\n  :dummy: {}\n:pools:\n  - name: p\n    template: t/p\n    size: 1\n    provider: dummy\n"
    )
    return config


def test_gives_up_with_one_line_naming_the_server_and_the_cause(tmp_path: Path) -> None:
    port = free_port()
    for role in ("manager", "api", "events"):
        done = subprocess.run(
            [VMPOOLER, role, "--config", str(_config(tmp_path, port)), "--port", str(free_port())]
            if role == "api"
            else [VMPOOLER, role, "--config", str(_config(tmp_path, port))],
            env={**_ENV, "REDIS_STARTUP_TIMEOUT": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (role, done.stderr)
        last = done.stderr.strip().splitlines()[-1]
        assert last == f"vmpooler: Redis at 127.0.0.1:{port} is unreachable after 1 s: Connection refused"
        assert "Traceback" not in done.stderr
        assert "retrying for up to 1 s" in done.stderr  # it did wait, and said so


def test_waits_for_redis_then_serves(tmp_path: Path, prefix: str) -> None:
    port, api = free_port(), free_port()
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [VMPOOLER, "--config", str(_config(tmp_path, port, prefix)), "--port", str(api)],
            env=_ENV,
            stdout=log,
            stderr=log,
        )
    server = None
    try:
        until(lambda: b"does not answer" in log_path.read_bytes(), what="the service to wait for Redis")
        server = RedisServer(port=port, appendonly=False).start()
        base = f"http://127.0.0.1:{api}"

        def ready() -> bool:
            try:
                return http("GET", f"{base}/api/v3/status?view=pools")[1]["pools"]["p"]["ready"] == 1
            except OSError:
                return False

        until(ready, what="the pool to fill")
        assert b"Traceback" not in log_path.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        if server is not None:
            server.stop()


async def test_a_worker_with_no_pools_idles_quietly(redis: aioredis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    worker = Worker(
        redis, keys, Handlers(PoolCommands(redis, keys), lambda p: None, worker="w"), [], consumer="w"
    )  # type: ignore[arg-type,return-value]
    await worker.setup()
    assert await worker.step(block_ms=10) == 0


def test_cluster_settings_are_checked_at_start_up(tmp_path: Path, redis_url: str) -> None:
    """``:redis: cluster`` needs a node to start from; ``REDIS_CLUSTER`` turns it on, and a server
    that is no cluster node is named as such."""
    config = tmp_path / "c.yaml"
    config.write_text(":redis:\n  cluster: true\n:pools: []\n")
    done = subprocess.run(
        [VMPOOLER, "events", "--config", str(config)], env=_ENV, capture_output=True, text=True
    )
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "vmpooler: :redis: cluster is true, but no server or url names a node of the cluster",
    )
    config.write_text(f":redis:\n  url: {redis_url}\n:pools: []\n")
    env = {**_ENV, "REDIS_CLUSTER": "true", "REDIS_STARTUP_TIMEOUT": "0"}
    done = subprocess.run(
        [VMPOOLER, "events", "--config", str(config)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("This instance has cluster support disabled"), (
        done.stderr
    )
