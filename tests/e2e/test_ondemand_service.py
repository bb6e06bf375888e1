"""On-demand requests against the service started as the README says: a request is provisioned by
the manager, workers and the simulated provider, shows up ready with its hostnames, and is deleted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e._harness import http, until
from tests.e2e.test_service import cli, service

__all__ = ["service"]  # the module-scoped fixture, imported so this module starts its own service


def test_ondemand_request_is_fulfilled_then_deleted(
    service: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    base, workdir, _ = service
    status, created = http(
        "POST", f"{base}/api/v3/ondemandvm", json.dumps({"debian": "2", "win-2022": 1}).encode()
    )
    assert status == 201, created
    rid = created["request_id"]

    def ready() -> dict[str, object] | None:
        code, got = http("GET", f"{base}/api/v3/ondemandvm/{rid}")
        assert code in (200, 202), got
        return got if code == 200 else None

    got = until(ready, timeout=60, what="the on-demand request to be ready")
    assert got["ready"] is True
    assert len(got["debian"]["hostname"]) == 2
    [win] = got["win-2022"]["hostname"]
    assert win.endswith(".example.com")
    vm = win.split(".")[0]
    code, shown = http("GET", f"{base}/api/v3/vm/{vm}")
    assert (code, shown[vm]["state"]) == (200, "running")
    assert http("DELETE", f"{base}/api/v3/ondemandvm/{rid}") == (200, {"ok": True})
    until(
        lambda: http("GET", f"{base}/api/v3/vm/{vm}")[1][vm]["state"] == "destroyed",
        timeout=60,
        what="the delivered VM to be destroyed",
    )
    assert http("GET", f"{base}/api/v3/ondemandvm/{rid}") == (
        200,
        {"ok": True, "request_id": rid, "ready": False, "message": "The request has been deleted"},
    )
    rebuilt = cli(workdir, "state", "rebuild")  # the pools' and the requests' decision state, from the logs
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "(0 entries refused)" in rebuilt.stdout
    assert cli(workdir, "projections", "rebuild").returncode == 0
    assert http("GET", f"{base}/api/v3/ondemandvm/{rid}")[1]["message"] == "The request has been deleted"
