"""``:config: logfile``: the process logs there too; a file that cannot be opened stops it with a
one-line error."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.e2e._harness import VMPOOLER


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VMPOOLER, "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


def test_logfile(tmp_path: Path, redis_url: str, prefix: str) -> None:
    log = tmp_path / "vmpooler.log"
    config = tmp_path / "vmpooler.yaml"
    config.write_text(
        f"---\n:redis:\n  url: '{redis_url}'\n  prefix: '{prefix}'\n:config:\n  logfile: '{log}'\n"
        ":pools:\n  - name: 'p'\n    template: 't/p'\n    size: 1\n"
    )
    done = run(config, "projections", "rebuild")
    assert done.returncode == 0, done.stderr
    assert f"logging to {log}" in log.read_text()

    config.write_text(config.read_text().replace(str(log), str(tmp_path / "no" / "such" / "dir.log")))
    refused = run(config, "projections", "rebuild")
    assert refused.returncode == 2
    assert refused.stderr.startswith("vmpooler: :config: logfile"), refused.stderr
    assert "No such file or directory" in refused.stderr
