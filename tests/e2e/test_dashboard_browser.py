"""The dashboard in a real headless browser (Chromium driven by Playwright) against the running
service: it loads without console errors, shows the configured pools, and a checkout made over the
API shows up within 2 s without a reload. A screenshot is saved under ``test-artifacts/``."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e._harness import CHROMIUM, CHROMIUM_ARGS, ROOT, http, running_service, until

ARTIFACTS = ROOT / "test-artifacts"
POOLS = ("debian-12", "centos-9", "win-2022")

sync_api: Any = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"no Chromium at {CHROMIUM} (set CHROMIUM to its path)", allow_module_level=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_service(tmp_path_factory.mktemp("dashboard")) as (url, _):
        yield url


def wait_for(page: Any, expression: str, *, arg: Any = None, timeout: int) -> None:
    """Poll ``expression`` in the page until it is truthy (``timeout`` ms). Playwright's own
    ``wait_for_function`` polls by evaluating strings in the page, which the dashboard's
    Content-Security-Policy (no ``unsafe-eval``) forbids; ``evaluate`` goes through the devtools
    protocol, which the policy does not govern."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(20)


def running_in(page: Any, pool: str) -> int:
    text = page.locator(f'.pool[data-pool="{pool}"] .c').inner_text()
    return int(text.split("·")[2].split()[0])


def test_dashboard_is_live_in_a_browser(base: str) -> None:
    ready = lambda: http("GET", f"{base}/api/v3/status?view=pools")[1]["pools"]["debian-12"]["ready"] >= 2  # noqa: E731
    until(ready, what="debian-12 to have ready VMs")
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console", lambda m: m.type in ("error", "warning") and problems.append(f"{m.type}: {m.text}")
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "requestfailed",
                lambda r: "/dashboard/events" not in r.url and problems.append(f"failed: {r.url}"),
            )
            assert page.goto(f"{base}/").status == 200  # / redirects to the dashboard
            assert page.url == f"{base}/dashboard/"
            page.wait_for_selector(".pool", timeout=10_000)
            assert page.locator(".pool").evaluate_all("els => els.map(e => e.dataset.pool)") == list(POOLS)
            wait_for(page, "window.dashboard.mode === 'on'", timeout=10_000)
            wait_for(page, "document.querySelector('#c-running').width > 0", timeout=10_000)
            wait_for(page, "window.dashboard.week > 0", timeout=10_000)  # the week row is drawn

            before = running_in(page, "debian-12")
            started = time.monotonic()
            status, body = http("POST", f"{base}/api/v3/vm/debian-12")
            assert status == 200, body
            vm = body["debian-12"]["hostname"].split(".")[0]
            wait_for(
                page,
                "([n]) => document.querySelector('.pool[data-pool=\"debian-12\"] .c').textContent"
                ".includes(` ${n} run`)",
                arg=[before + 1],
                timeout=2_000,
            )
            page.wait_for_selector(f'#feed a[href="/dashboard/vm/{vm}"]', timeout=2_000)
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, elapsed
            assert page.evaluate("window.dashboard.updates") >= 1  # it came live, not by a reload
            charts = page.evaluate("window.dashboard.charts")
            # the charts follow live too
            wait_for(page, f"window.dashboard.charts > {charts}", timeout=5_000)

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot} (checkout shown after {elapsed * 1000:.0f} ms)")
            assert shot.stat().st_size > 10_000

            # the feed's link opens the VM's whole history, oldest first
            page.click(f'#feed a[href="/dashboard/vm/{vm}"]')
            page.wait_for_selector("#vm[open] #vm-events tr", timeout=5_000)
            kinds = page.locator("#vm-events tr td:nth-child(2)").all_inner_texts()
            assert kinds[0] == "vm.clone-requested"
            assert "vm.checked-out" in kinds
            assert vm in page.locator("#vm-name").inner_text()
            page.screenshot(path=str(ARTIFACTS / "dashboard-vm.png"))
        finally:
            browser.close()
    assert not problems, problems


def test_without_event_source_the_page_polls(base: str) -> None:
    until(lambda: http("GET", f"{base}/api/v3/status?view=pools")[1]["pools"]["centos-9"]["ready"] >= 1)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.add_init_script("delete window.EventSource")
            page.goto(f"{base}/dashboard/")
            wait_for(page, "window.dashboard.mode === 'poll'", timeout=10_000)
            before = running_in(page, "centos-9")
            status, body = http("POST", f"{base}/api/v3/vm/centos-9")
            assert status == 200, body
            wait_for(
                page,
                "([n]) => document.querySelector('.pool[data-pool=\"centos-9\"] .c').textContent"
                ".includes(` ${n} run`)",
                arg=[before + 1],
                timeout=8_000,  # one 5 s poll, and the projection
            )
            assert page.evaluate("window.dashboard.updates") == 0
            vm = body["centos-9"]["hostname"].split(".")[0]
            history = http("GET", f"{base}/dashboard/vm/{vm}")[1]
            assert [e["type"] for e in history["events"]][-1] == "vm.checked-out"
        finally:
            browser.close()
