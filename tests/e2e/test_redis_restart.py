"""Fault test: the service outlives its Redis being killed (SIGKILL) and restarted from its AOF."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e._harness import CONFIG, VMPOOLER, http, until
from vmpooler.redis_server import RedisServer, free_port


def test_service_survives_a_redis_crash_and_restart(tmp_path: Path) -> None:
    data, port, api = tmp_path / "redis", free_port(), free_port()
    redis = RedisServer(data, port=port, appendonly=True).start()
    config = Path(CONFIG).read_text() + f"\n:redis:\n  url: redis://127.0.0.1:{port}/0\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen(
        [VMPOOLER, "--port", str(api)],
        env={**env, "VMPOOLER_CONFIG": config},
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{api}"
    try:
        until(
            lambda: (
                _answers(base)
                and http("GET", f"{base}/api/v3/status?view=pools")[1]["pools"]["centos-9"]["ready"] == 3
            ),
            what="centos-9 to fill",
        )
        status, body = http("POST", f"{base}/api/v3/vm/centos-9")
        assert status == 200
        vm = body["centos-9"]["hostname"]
        time.sleep(1.5)  # appendfsync everysec: what was acknowledged a second ago is on disk

        redis.kill()
        assert http("POST", f"{base}/api/v3/vm/centos-9") == (503, {"ok": False})  # not a 500
        assert http("GET", f"{base}/healthcheck") == (503, {"ok": False, "redis": False})

        redis = RedisServer(data, port=port, appendonly=True).start()
        until(lambda: http("GET", f"{base}/healthcheck")[0] == 200, what="the service to see Redis again")
        assert http("GET", f"{base}/api/v3/vm/{vm}")[1][vm]["state"] == "running"  # the log survived
        # once Redis answers, no request fails: the pooled sockets that died with it reconnect
        statuses = [http("GET", f"{base}/api/v3/vm/{vm}")[0] for _ in range(64)]
        assert statuses == [200] * 64
        assert http("GET", f"{base}/healthcheck")[0] == 200
        until(lambda: http("POST", f"{base}/api/v3/vm/centos-9")[0] == 200, what="checkouts to work again")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        redis.stop()
        log.close()


def _answers(base: str) -> bool:
    try:
        return http("GET", f"{base}/healthcheck")[0] == 200
    except OSError:
        return False
