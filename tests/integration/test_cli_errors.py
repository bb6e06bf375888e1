"""The command line's expected failures, run as an operator runs it (the ``vmpooler`` script): one
line on stderr and a clear exit code, never a traceback. A closed stdout, Redis going away in the
middle of a command, a configuration with typos, hostile user names in the log."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from commands.pool import Meta, PoolCommands
from events import Keys, PoolConfigured
from tests.e2e._harness import VMPOOLER, until
from vmpooler.redis_server import RedisServer

HOSTILE = "evil\x1b[31m\nfake line\r\u009b2J\u202e"


def config_file(tmp_path: Path, url: str, prefix: str, extra: str = "") -> Path:
    path = tmp_path / "vmpooler.yaml"
    path.write_text(
        f":redis:\n  url: '{url}'\n  prefix: '{prefix}'\n"
        f":pools:\n  - name: p\n    template: 't/p'\n    size: 1\n{extra}"
    )
    return path


def run(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
    return subprocess.run(
        [VMPOOLER, "--config", str(config), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("vmpooler: "), stderr
    return stderr


def seed(url: str, prefix: str, vms: int, actor: str = "test", template: str = "t/p") -> int:
    """``vms`` clone requests in pool ``p`` (plus its ``pool.configured``); returns the log's length."""

    async def append() -> int:
        redis = aioredis.Redis.from_url(url)
        try:
            settings = PoolConfigured(size=vms, template=template, clone_limit=vms, ready_ttl=60, timeout=15)
            await PoolCommands(redis, Keys(prefix)).configure("p", settings, Meta(actor))
            return int(await redis.xlen(Keys(prefix).stream("p")))
        finally:
            await redis.aclose()

    return asyncio.run(append())


# --- stdout closed by its reader ------------------------------------------------------------------


def test_events_into_a_closed_pipe_stop_quietly(tmp_path: Path, redis_url: str, prefix: str) -> None:
    seed(redis_url, prefix, 1000)  # far more than a pipe buffer holds
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
    proc = subprocess.Popen(
        [VMPOOLER, "--config", str(config_file(tmp_path, redis_url, prefix)), "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert b"pool.configured" in proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""  # no traceback, no "Exception ignored" at exit


# --- hostile names in the log ------------------------------------------------------------------------


def test_events_escape_control_characters_of_actors_and_bodies(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    entries = seed(redis_url, prefix, 2, actor=f"api:{HOSTILE}", template=f"t/{HOSTILE}")
    config = config_file(tmp_path, redis_url, prefix)

    text = run(config, "events", "--pool", "p")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == entries  # no line faked by a newline in a name
    assert all(line.isprintable() for line in lines)
    assert "api:evil\\x1b[31m\\nfake line" in lines[0]

    as_json = run(config, "events", "--pool", "p", "--json")
    assert as_json.returncode == 0, as_json.stderr
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert all(line.isprintable() for line in as_json.stdout.splitlines())
    assert records[0]["actor"] == f"api:{HOSTILE}"
    assert records[0]["event"]["template"] == f"t/{HOSTILE}"

    missing = run(config, "events", "--vm", f"x{HOSTILE}")
    assert missing.returncode == 1
    assert one_line(missing.stderr)[:-1].isprintable()


# --- Redis going away in the middle of a command -----------------------------------------------------


class CuttingProxy:
    """A TCP relay to Redis that passes ``replies`` reads from Redis, then cuts every connection and
    refuses new ones: Redis going away in the middle of whatever the client was doing."""

    def __init__(self, upstream: tuple[str, int], replies: int) -> None:
        self.upstream = upstream
        self.left = replies
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                if self.left <= 0:
                    client.close()
                    continue
                backend = socket.create_connection(self.upstream)
                self.open += [client, backend]
            threading.Thread(target=self._pipe, args=(client, backend, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(backend, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                with self.lock:
                    if counted:
                        self.left -= 1
                    if self.left < 0:
                        break
                sink.sendall(data)
        except OSError:
            pass
        with self.lock:
            if self.left <= 0:
                for sock in self.open:
                    sock.close()

    def close(self) -> None:
        self.server.close()
        for sock in self.open:
            sock.close()


@pytest.fixture
def cut_redis(redis_url: str) -> Iterator[CuttingProxy]:
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = CuttingProxy((host, int(port)), replies=6)
    yield proxy
    proxy.close()


@pytest.mark.parametrize(
    "command",
    [
        ["events"],
        ["projections", "rebuild"],
        ["state", "rebuild"],
        ["archive", "--before", "1d", "--to", "arch"],
    ],
)
def test_redis_lost_mid_command_is_one_line_and_exit_2(
    command: list[str], tmp_path: Path, redis_url: str, cut_redis: CuttingProxy, prefix: str
) -> None:
    seed(redis_url, prefix, 50)
    config = config_file(tmp_path, f"redis://127.0.0.1:{cut_redis.port}/0", prefix)
    done = run(config, *command)
    assert done.returncode == 2, done.stderr
    assert "Redis" in one_line(done.stderr)


def test_redis_killed_under_events_follow(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(appendonly=False).start()
    try:
        # the follower outlives a Redis restart; it gives up once Redis stays away startup_timeout
        config = config_file(tmp_path, server.url, prefix)
        config.write_text(config.read_text().replace(":pools:", "  startup_timeout: 2\n:pools:"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
        proc = subprocess.Popen(
            [VMPOOLER, "--config", str(config), "events", "-f"], stderr=subprocess.PIPE, text=True, env=env
        )
        probe = redis.Redis.from_url(server.url)
        # the follower waits on the log's bell (SUBSCRIBE) once it has read what is there
        until(
            lambda: any(c.get("cmd") in ("xread", "subscribe") for c in probe.client_list()),
            what="events -f to wait for new events",
        )
        probe.close()
    finally:
        server.kill()
    assert proc.wait(timeout=90) == 2
    assert proc.stderr is not None
    assert "Redis is out of reach" in one_line(proc.stderr.read())


# --- the configuration ----------------------------------------------------------------------------


def test_typos_stop_startup_each_on_its_own_line(tmp_path: Path, redis_url: str, prefix: str) -> None:
    config = config_file(tmp_path, redis_url, prefix, "    sise: 2\n:config:\n  task_limt: 3\n")
    done = run(config, "events")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "vmpooler: :pools: p: sise: unknown key; did you mean 'size'?",
        "vmpooler: :config: task_limt: unknown key; did you mean 'task_limit'?",
    ]


def test_warnings_are_logged_and_refused_with_strict(tmp_path: Path, redis_url: str, prefix: str) -> None:
    config = config_file(tmp_path, redis_url, prefix, "    folder: ci/p\n")
    warned = run(config, "projections", "rebuild")
    assert warned.returncode == 0, warned.stderr
    assert "WARNING vmpooler: :pools: p: folder: not a pool key, nor read by the 'dummy' provider" in (
        warned.stderr
    )
    strict = run(config, "--strict", "projections", "rebuild")
    assert strict.returncode == 2
    assert one_line(strict.stderr).endswith("ignored (refused: --strict)\n")


def test_config_check_prints_the_effective_configuration_and_exits_by_severity(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    secret = ":providers:\n  :vc:\n    provider_class: vsphere\n    server: vc\n    password: hunter2\n"
    clean = config_file(tmp_path, redis_url, prefix, secret)
    done = run(clean, "config", "check")
    assert (done.returncode, done.stderr) == (0, "")
    assert "hunter2" not in done.stdout
    assert "password: <redacted>" in done.stdout

    clean.write_text(clean.read_text().replace("    size: 1\n", "    size: 1\n    zone: z\n"))
    warned = run(clean, "config", "check", "--format", "json")
    assert warned.returncode == 1
    assert json.loads(warned.stdout)["pools"][0]["zone"] == "z"
    assert (
        warned.stderr
        == "vmpooler: warning: :pools: p: zone: not a pool key, nor read by the 'dummy' provider; ignored\n"
    )
    assert run(clean, "config", "check", "--strict").returncode == 2

    clean.write_text(clean.read_text().replace("    zone: z\n", "    sise: 2\n"))
    refused = run(clean, "config", "check")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == "vmpooler: error: :pools: p: sise: unknown key; did you mean 'size'?\n"

    clean.write_text(
        clean.read_text()
        .replace("    sise: 2\n", "")
        .replace("hunter2", "hunter2\n  :dummy:\n    createvm_fail_percent: 200")
    )
    knob = run(clean, "config", "check")  # refused only when the service is assembled
    assert knob.returncode == 2
    assert "createvm_fail_percent" in one_line(knob.stderr)
