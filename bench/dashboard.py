"""Dashboard benchmark in a real headless Chromium (Playwright) against a running service.

Starts ``vmpooler`` (embedded Redis, simulated provider) with ``--pools`` pools of size 1 (default
500, named after eight OS families) and waits until every pool is full, then measures:

- first paint: ms from navigation start until the page first drew the pool grid (median of
  ``--runs`` fresh page loads), and the same with a 10-pool service as the baseline (ratio);
- SSE update latency: ms from just before a checkout over the API until the browser has drawn it
  in the pool's cell (median of ``--updates`` checkouts of different pools);
- idle bytes per minute: every byte the server sent to one open, idle dashboard over ``--idle``
  seconds (counted by a TCP proxy between browser and service, headers and SSE included),
  scaled to one minute.

    .venv/bin/python bench/dashboard.py [--pools 500] [--runs 5] [--updates 10] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from tests.e2e._harness import CHROMIUM, CHROMIUM_ARGS, VMPOOLER
from vmpooler.redis_server import free_port

FAMILIES = ("debian", "centos", "ubuntu", "win", "rhel", "sles", "fedora", "macos")


def config(pools: int) -> str:
    lines = [
        ":config:",
        "  site_name: 'dashboard bench'",
        "  task_limit: 50",
        ":providers:",
        "  :dummy:",
        "    createvm_max_time: 0.05",
        "    boot_time: 0.05",
        ":pools:",
    ]
    for i in range(pools):
        lines += [
            f"  - name: {FAMILIES[i % len(FAMILIES)]}-{i}",
            f"    template: templates/t{i}",
            "    size: 1",
        ]
    return "\n".join(lines) + "\n"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@contextmanager
def service(pools: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vmpooler.yaml"
        path.write_text(config(pools))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "REDIS_"))}
        log = (Path(tmp) / "service.log").open("wb")
        proc = subprocess.Popen(
            [VMPOOLER, "--config", str(path), "--port", str(port), "--log-level", "WARNING"],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    capacity = get(f"{base}/api/v3/status?view=capacity")["capacity"]
                    if capacity["total"] and capacity["current"] == capacity["total"]:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            else:
                raise SystemExit(f"the {pools} pools did not fill in time")
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()


class CountingProxy:
    """A TCP proxy counting the bytes the server sends back."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.down = 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.sock.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def first_paint(page: Page, base: str, close: bool = False) -> float:
    page.goto(f"{base}/dashboard/")
    page.wait_for_function("window.dashboard && window.dashboard.firstPaint > 0", timeout=30_000)
    paint = float(page.evaluate("window.dashboard.firstPaint"))
    if close:
        page.close()
    return paint


def update_latency(page: Page, base: str, pool: str) -> tuple[float, float]:
    """(ms until drawn, ms until the SSE message arrived in the page) for one checkout."""
    cell = f'.pool[data-pool="{pool}"] .c'
    before = int(page.locator(cell).inner_text().split("·")[2].split()[0])
    started = time.time() * 1000
    request = urllib.request.Request(f"{base}/api/v3/vm/{pool}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    handle = page.wait_for_function(
        "([sel, n]) => document.querySelector(sel).textContent.includes(` ${n} run`) && Date.now()",
        arg=[cell, before + 1],
        polling="raf",
        timeout=10_000,
    )
    drawn = float(handle.json_value())
    received = float(page.evaluate("window.dashboard.lastCheckout"))
    return drawn - started, min(received, drawn) - started


def measure(base: str, args: argparse.Namespace, pools: list[str]) -> float:
    """Prints the figures of the big service; returns its median first paint."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        paints = [first_paint(browser.new_page(), base, close=True) for _ in range(args.runs)]
        p500 = statistics.median(paints)
        print(f"first paint, {len(pools)} pools: {p500:.0f} ms (median of {args.runs})")
        page = browser.new_page()
        first_paint(page, base)
        page.wait_for_function("window.dashboard.mode === 'on'", timeout=10_000)
        step = max(1, len(pools) // args.updates)
        both = [update_latency(page, base, pools[(i * step) % len(pools)]) for i in range(args.updates)]
        lat, arrived = [b[0] for b in both], [b[1] for b in both]
        print(
            f"SSE update latency, checkout to drawn, {len(pools)} pools: {statistics.median(lat):.0f} ms "
            f"(median of {args.updates}, max {max(lat):.0f})"
        )
        print(f"SSE update latency, checkout to message in the page: {statistics.median(arrived):.0f} ms")
        page.close()
        proxy = CountingProxy(int(base.rsplit(":", 1)[1]))
        idle = browser.new_page()
        first_paint(idle, f"http://127.0.0.1:{proxy.port}")
        idle.wait_for_function(
            "window.dashboard.mode === 'on' && window.dashboard.charts > 0", timeout=30_000
        )
        loaded = proxy.down
        time.sleep(5)
        start = proxy.down
        time.sleep(args.idle)
        per_minute = (proxy.down - start) * 60 / args.idle
        print(f"page load until live with charts, {len(pools)} pools: {loaded / 1024:.1f} KiB transferred")
        print(
            f"idle dashboard, {len(pools)} pools: {per_minute / 1024:.1f} KiB per minute (one {args.idle} s run)"
        )
        browser.close()
    return p500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    names = [f"{FAMILIES[i % len(FAMILIES)]}-{i}" for i in range(args.pools)]
    with service(10) as small, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        p10 = statistics.median(first_paint(browser.new_page(), small, close=True) for _ in range(args.runs))
        browser.close()
    with service(args.pools) as base:
        p500 = measure(base, args, names)
    print(f"first paint, 10 pools (baseline, same run): {p10:.0f} ms; ratio {p500 / p10:.2f}")


if __name__ == "__main__":
    main()
