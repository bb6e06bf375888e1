"""The service on a 3-master Redis Cluster, with the same code as on one Redis: a VM's lifecycle over
HTTP, on-demand requests, ``events --follow``, ``projections rebuild``, and two API processes racing
for the same VMs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from tests._cluster import LocalCluster
from tests.e2e._harness import CONFIG, VMPOOLER, http, until
from vmpooler.redis_server import free_port

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}


def cluster_config(workdir: Path, cluster: LocalCluster, prefix: str, base: str = CONFIG) -> Path:
    config = workdir / f"{prefix}.yaml"
    config.write_text(
        Path(base).read_text() + f"\n:redis:\n  url: {cluster.url}\n  cluster: true\n  prefix: {prefix}\n"
    )
    return config


class Running:
    """``vmpooler [role]`` processes on one config, stopped (SIGTERM) at the end."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.workdir, self.config = workdir, config
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, name: str = "service") -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [VMPOOLER, *args, "--config", str(self.config)], cwd=self.workdir, env=ENV, stdout=log, stderr=log
        )
        log.close()
        self.procs.append(proc)
        return proc

    def api(self, *args: str, name: str = "service") -> str:
        port = free_port()
        self.start(*args, "--port", str(port), name=name)
        base = f"http://127.0.0.1:{port}"
        until(lambda: _healthy(base), what=f"{name} to answer")
        return base

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VMPOOLER, *args, "--config", str(self.config)],
            cwd=self.workdir,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [proc.wait(timeout=20) for proc in self.procs]


def _healthy(base: str) -> bool:
    try:
        return http("GET", f"{base}/healthcheck")[0] == 200
    except OSError:
        return False


def ready(base: str, pool: str) -> int:
    return int(http("GET", f"{base}/api/v3/status?view=pools")[1]["pools"][pool]["ready"])


@pytest.fixture(scope="module")
def service(
    redis_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Running]]:
    workdir = tmp_path_factory.mktemp("cluster")
    running = Running(workdir, cluster_config(workdir, redis_cluster, "e2ecluster"))
    try:
        yield running.api(), running
    finally:
        assert running.stop() == [0]


def test_lifecycle_over_http_on_a_cluster(service: tuple[str, Running]) -> None:
    base, _ = service
    for pool in ("debian-12", "centos-9", "win-2022"):  # three pools, three slots
        until(lambda pool=pool: ready(base, pool) >= 2, what=f"{pool} to fill")
    status, body = http("POST", f"{base}/api/v3/vm/centos-9")
    assert status == 200, body
    vm = body["centos-9"]["hostname"]
    status, body = http("PUT", f"{base}/api/v3/vm/{vm}", json.dumps({"lifetime": 3}).encode())
    assert (status, body) == (200, {"ok": True})
    until(lambda: http("GET", f"{base}/api/v3/vm/{vm}")[1][vm]["lifetime"] == 3, what="the lifetime")
    assert http("DELETE", f"{base}/api/v3/vm/{vm}") == (200, {"ok": True})
    until(lambda: http("GET", f"{base}/api/v3/vm/{vm}")[1][vm]["state"] == "destroyed", what="the destroy")
    until(lambda: ready(base, "centos-9") == 3, what="centos-9 to refill")
    status, body = http("GET", f"{base}/api/v3/status")
    assert status == 200, body


def test_ondemand_request_on_a_cluster(service: tuple[str, Running]) -> None:
    base, _ = service
    status, body = http("POST", f"{base}/api/v3/ondemandvm", json.dumps({"debian-12": 2}).encode())
    assert status == 201, body
    rid = body["request_id"]
    done = until(lambda: (b := http("GET", f"{base}/api/v3/ondemandvm/{rid}")[1]).get("ready") and b)
    assert len(done["debian-12"]["hostname"]) == 2
    assert http("DELETE", f"{base}/api/v3/ondemandvm/{rid}")[0] == 200


def test_events_follow_on_a_cluster(service: tuple[str, Running]) -> None:
    base, running = service
    errors = (running.workdir / "follow.log").open("wb")
    follow = subprocess.Popen(
        [VMPOOLER, "events", "--follow", "--config", str(running.config)],
        cwd=running.workdir,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    errors.close()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follow.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        until(lambda: ready(base, "win-2022") >= 1, what="win-2022 to have a VM")

        def checked_out() -> str | None:  # --follow starts at the end of the logs: retry until seen
            status, body = http("POST", f"{base}/api/v3/vm/win-2022")
            assert status == 200, body
            vm = body["win-2022"]["hostname"].split(".")[0]
            until(lambda: any(vm in line and "vm.checked-out" in line for line in lines), timeout=5)
            return vm

        assert until(lambda: _try(checked_out), what="events --follow to print the checkout")
    finally:
        # SIGTERM: a test run in the background (as CI may be) has SIGINT ignored, and its children too
        follow.terminate()
        follow.wait(timeout=20)
        print((running.workdir / "follow.log").read_text()[-3000:])


def _try(check: Any) -> Any:
    try:
        return check()
    except AssertionError:
        return None


def _read_models(url: str, prefix: str) -> dict[bytes, Any]:
    client = redis.RedisCluster.from_url(url)
    try:
        keys = sorted(k for k in client.scan_iter(match=f"{prefix}:*:rm:*", count=1000))
        return {k: client.dump(k) for k in keys}
    finally:
        client.close()


def test_projections_rebuild_on_a_cluster_is_byte_identical(
    service: tuple[str, Running], redis_cluster: LocalCluster
) -> None:
    base, running = service
    for pool, size in (("debian-12", 5), ("centos-9", 3), ("win-2022", 2)):
        until(lambda pool=pool, size=size: ready(base, pool) == size, what=f"{pool} to fill")
    before = until(
        lambda: (
            (a := _read_models(redis_cluster.url, "e2ecluster"))
            == _read_models(redis_cluster.url, "e2ecluster")
            and a
        )
    )
    assert {k.split(b"}")[0] for k in before} == {
        b"e2ecluster:{centos-9",
        b"e2ecluster:{debian-12",
        b"e2ecluster:{win-2022",
        b"e2ecluster:{ctl",
    }
    done = running.cli("projections", "rebuild")
    assert done.returncode == 0, done.stderr
    assert _read_models(redis_cluster.url, "e2ecluster") == before


def test_two_api_processes_hand_out_each_vm_once(redis_cluster: LocalCluster, tmp_path: Path) -> None:
    """200 checkouts race for 50 ready VMs through two API processes (refills held: the manager is
    paused): 50 succeed with 50 different VMs, 150 are refused."""
    base_config = tmp_path / "race.yaml"
    base_config.write_text(
        ":config:\n  task_limit: 50\n:providers:\n  :dummy:\n    createvm_max_time: 0.1\n    boot_time: 0\n"
        ":pools:\n  - name: race\n    template: templates/race\n    size: 50\n    provider: dummy\n"
    )
    running = Running(tmp_path, cluster_config(tmp_path, redis_cluster, "race", str(base_config)))
    try:
        manager = running.start("manager", name="manager")
        apis = [running.api("api", name=f"api{i}") for i in range(2)]
        until(lambda: ready(apis[0], "race") == 50, timeout=60, what="the pool to fill")
        manager.send_signal(signal.SIGSTOP)  # no refill while they race
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(lambda i: http("POST", f"{apis[i % 2]}/api/v3/vm/race"), range(200)))
        manager.send_signal(signal.SIGCONT)
    finally:
        codes = running.stop()
    handed = [body["race"]["hostname"] for status, body in results if status == 200]
    assert len(set(handed)) == len(handed) == 50
    assert sorted(status for status, _ in results) == [200] * 50 + [503] * 150
    assert codes == [0, 0, 0]
