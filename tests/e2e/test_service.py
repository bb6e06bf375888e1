"""The service started as the README says (``vmpooler --config examples/vmpooler.yaml``: embedded
Redis, simulated provider), driven over HTTP through a whole VM lifecycle, then audited and replayed
with the CLI, then stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._harness import CONFIG, VMPOOLER, http, running_service, until


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    workdir = tmp_path_factory.mktemp("service")
    with running_service(workdir) as (base, proc):
        yield base, workdir, proc


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
    return subprocess.run(
        [VMPOOLER, "--config", CONFIG, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ready(base: str, pool: str) -> int:
    return int(http("GET", f"{base}/api/v3/status?view=pools")[1]["pools"][pool]["ready"])


def test_full_lifecycle_over_http(service: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    base, workdir, _ = service
    until(lambda: ready(base, "win-2022") == 2, what="win-2022 to fill")

    status, body = http("POST", f"{base}/api/v3/vm/win-2022")
    assert status == 200
    assert body["ok"] is True
    fqdn = body["win-2022"]["hostname"]
    assert isinstance(fqdn, str)
    assert fqdn.endswith(".example.com")
    vm = fqdn.split(".")[0]

    status, detail = http("GET", f"{base}/api/v3/vm/{fqdn}")
    assert status == 200
    assert detail[vm]["state"] == "running"
    assert detail[vm]["template"] == "win-2022"
    assert detail[vm]["lifetime"] == 24

    # the replacement clone was requested by the checkout itself: the pool refills
    until(lambda: ready(base, "win-2022") == 2, what="win-2022 to refill")

    status, body = http(
        "PUT", f"{base}/api/v3/vm/{vm}", json.dumps({"lifetime": 2, "tags": {"team": "ci"}}).encode()
    )
    assert (status, body) == (200, {"ok": True})
    detail = until(lambda: (d := http("GET", f"{base}/api/v3/vm/{vm}")[1][vm])["lifetime"] == 2 and d)
    assert detail["tags"] == {"team": "ci"}

    assert http("DELETE", f"{base}/api/v3/vm/{vm}") == (200, {"ok": True})
    until(lambda: http("GET", f"{base}/api/v3/vm/{vm}")[1][vm]["state"] == "destroyed", what="the destroy")
    assert http("DELETE", f"{base}/api/v3/vm/{vm}") == (404, {"ok": False})

    def event_types() -> list[str]:
        history = cli(workdir, "events", "--vm", vm)
        assert history.returncode == 0, history.stderr
        return [line.split()[3] for line in history.stdout.splitlines()]

    # GET says "destroyed" from the start of the destroy (as vmpooler does); the provider call follows
    types = until(lambda: (t := event_types()) and "vm.destroyed" in t and t, what="vm.destroyed in the log")
    for expected in (
        "vm.clone-requested",
        "vm.cloned",
        "vm.ready",
        "vm.checked-out",
        "vm.lifetime-changed",
        "vm.tagged",
        "vm.returned",
        "vm.destroy-started",
        "vm.destroyed",
    ):
        assert expected in types
    assert types.index("vm.checked-out") < types.index("vm.returned") < types.index("vm.destroyed")

    before = http("GET", f"{base}/api/v3/vm/{vm}")
    rebuilt = cli(workdir, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert http("GET", f"{base}/api/v3/vm/{vm}") == before


def test_bad_input_is_refused_cleanly(service: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    base, _, _ = service
    assert http("POST", f"{base}/api/v3/vm/no-such-pool") == (404, {"ok": False})
    status, body = http("POST", f"{base}/api/v3/vm", b"{not json")
    assert status == 400
    assert body["error"].startswith("Invalid JSON")
    assert http("GET", f"{base}/api/v3/vm/not..a..host")[0] == 400


def test_archive_then_audit_and_rebuild_from_it(service: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    base, workdir, _ = service
    status, body = http("POST", f"{base}/api/v3/vm/debian-12")
    assert status == 200, body
    vm = body["debian-12"]["hostname"].split(".")[0]
    history = until(lambda: (h := cli(workdir, "events", "--vm", vm)).returncode == 0 and h.stdout)
    archive = workdir / "archive"

    done = cli(workdir, "archive", "--before", "0s", "--to", str(archive))
    assert done.returncode == 0, done.stderr
    assert "events archived" in done.stdout
    assert list((archive / "debian-12").glob("*.jsonl.gz"))

    refused = cli(workdir, "state", "rebuild")
    assert refused.returncode == 2
    assert "--archive" in refused.stderr
    rebuilt = cli(workdir, "state", "rebuild", "--archive", str(archive))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "(0 entries refused)" in rebuilt.stdout
    projected = cli(workdir, "projections", "rebuild", "--archive", str(archive))
    assert projected.returncode == 0, projected.stderr

    audited = cli(workdir, "events", "--vm", vm, "--archive", str(archive))
    assert audited.returncode == 0, audited.stderr
    assert audited.stdout.startswith(history.splitlines()[0])  # the VM's first event is still there
    bad = cli(workdir, "archive", "--before", "yesterday-ish", "--to", str(archive))
    assert (bad.returncode, bad.stderr.startswith("vmpooler: not a time")) == (2, True)
    (workdir / "not-a-dir").write_text("")
    assert http("POST", f"{base}/api/v3/vm/debian-12")[0] == 200  # new events to archive, once folded
    unwritable = until(
        lambda: (
            (r := cli(workdir, "archive", "--before", "0s", "--to", str(workdir / "not-a-dir"))).returncode
            and r
        ),
        what="an archive run with events to write",
    )
    assert unwritable.returncode == 2
    assert unwritable.stderr.startswith("vmpooler: cannot write the archive"), unwritable.stderr


def test_stops_cleanly_and_takes_its_redis_along(service: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    _, workdir, proc = service
    port = int((workdir / "vmpooler-data" / "redis.port").read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)  # the embedded Redis is gone too
