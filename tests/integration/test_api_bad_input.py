"""Bad input never crashes the API and never changes state: every malformed body, wrong type,
unknown pool, huge body or odd hostname gets a 4xx JSON answer in vmpooler's format, and the logs,
the decision state and the name registry are exactly as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration._api import DOMAIN, ApiEnv, api_env, body, make_settings
from web.validation import checkout_request_from_body, checkout_request_from_path, parse_json_body

SETTINGS = make_settings(
    [
        {"name": "pool1", "size": 1, "alias": ["poolone"], "dns_plugin": "example"},
        {"name": "empty", "size": 0},
    ]
)


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[tuple[ApiEnv, str]]:
    """The app with one running VM in pool1 (whose refill is already requested) and no ready VM
    anywhere, so even a valid checkout changes nothing (503)."""
    async with api_env(redis, redis_url, prefix, SETTINGS) as env:
        [vm] = await env.seed("pool1", 1)
        await env.seed("empty", 0)
        assert (await env.client.post("/api/v3/vm/pool1")).status_code == 200
        await env.project()
        yield env, vm


def error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def failure(*messages: str) -> dict[str, Any]:
    return {"ok": False, "failure": list(messages)}


NOT_FOUND: dict[str, Any] = {"ok": False}
DEEP = b'{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}'

CHECKOUT_BODIES: list[tuple[bytes, int, dict[str, Any] | None]] = [
    (b"{bad", 400, None),
    (b"\xff\xfe\x00", 400, None),
    (b"[1, 2]", 400, error("Request body must be a JSON object")),
    (b'"pool1"', 400, error("Request body must be a JSON object")),
    (b"null", 400, error("Request body must be a JSON object")),
    (DEEP, 400, error("Request body too complex")),
    (b'{"pool1":"' + b"1" * 20_000 + b'"}', 400, error("Request body too large")),
    (b"{" + b" " * 2_000_000 + b"}", 400, error("Request body too large")),
    (b'{"pool.1":"1"}', 400, error("Invalid pool name format")),
    ('{"pöol":"1"}'.encode(), 400, error("Invalid pool name format")),
    (b'{"' + b"a" * 101 + b'":"1"}', 400, error("Pool name too long")),
    (b'{"":"1"}', 400, error("Pool name is required")),
    (b'{"pool1":"0"}', 400, error("VM count must be at least 1")),
    (b'{"pool1":"101"}', 400, error("VM count must be at most 100")),
    (b'{"pool1":"1' + b"0" * 5000 + b'"}', 400, error("VM count must be at most 100")),
    (b'{"pool1":"abc"}', 400, error("VM count must be a valid integer")),
    (b'{"pool1":-1}', 400, error("VM count must be a valid integer")),
    (b'{"pool1":1.5}', 400, error("VM count must be a valid integer")),
    (b'{"pool1":true}', 400, error("VM count must be a valid integer")),
    (b'{"pool1":{}}', 400, error("VM count must be a valid integer")),
    (b'{"pool1":null}', 400, error("VM count is required")),
    (b'{"nosuch":"1"}', 404, NOT_FOUND),
    (b"{}", 404, NOT_FOUND),
    (b"", 404, NOT_FOUND),
]


@pytest.mark.parametrize(("content", "status", "expected"), CHECKOUT_BODIES)
async def test_checkout_body(api: tuple[ApiEnv, str], content: bytes, status: int, expected: Any) -> None:
    env, _ = api
    before = await env.snapshot()
    response = await env.client.post("/api/v3/vm", content=content)
    data = body(response)
    assert response.status_code == status
    if expected is None:
        assert data["ok"] is False
        assert data["error"].startswith("Invalid JSON: ")
    else:
        assert data == expected
    assert await env.snapshot() == before


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("nosuch", 404, NOT_FOUND),
        ("pool1+nosuch", 404, NOT_FOUND),
        ("%00", 404, NOT_FOUND),
        ("%2E%2E", 404, NOT_FOUND),
        ("p%C3%B6ol", 404, NOT_FOUND),
        ("x" * 300, 404, NOT_FOUND),
        ("pool1++empty", 400, error("Invalid pool name format")),
        ("pool1+", 400, error("Invalid pool name format")),
        ("+".join(["empty"] * 101), 400, error("VM count must be at most 100")),
    ],
)
async def test_checkout_path(api: tuple[ApiEnv, str], path: str, status: int, expected: Any) -> None:
    env, _ = api
    before = await env.snapshot()
    response = await env.client.post(f"/api/v3/vm/{path}")
    assert (response.status_code, body(response)) == (status, expected)
    assert await env.snapshot() == before


HOSTNAMES = [
    ("%2E%2E", error("Invalid hostname format")),
    ("a..b", error("Invalid hostname format")),
    ("-abc", error("Invalid hostname format")),
    ("abc-", error("Invalid hostname format")),
    ("vm-%C3%BC", error("Invalid hostname format")),
    ("%E2%84%AA", error("Invalid hostname format")),  # Kelvin sign, "k" only under Unicode folding
    ("%00", error("Invalid hostname format")),
    ("vm%00x", error("Invalid hostname format")),
    ("%20", error("Invalid hostname format")),
    ("a" * 64, error("Invalid hostname format")),
    ("a" * 300, error("Hostname too long")),
    (".".join(["a" * 60] * 5), error("Hostname too long")),
]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize(("hostname", "expected"), HOSTNAMES)
async def test_odd_hostnames(api: tuple[ApiEnv, str], method: str, hostname: str, expected: Any) -> None:
    env, _ = api
    before = await env.snapshot()
    response = await env.client.request(method, f"/api/v3/vm/{hostname}", content=b'{"tags":{"a":"b"}}')
    assert (response.status_code, body(response)) == (400, expected)
    assert await env.snapshot() == before


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_unknown_vm_is_404(api: tuple[ApiEnv, str], method: str) -> None:
    env, _ = api
    before = await env.snapshot()
    response = await env.client.request(method, f"/api/v3/vm/no-such-vm.{DOMAIN}", content=b"{bad")
    assert (response.status_code, body(response)) == (404, NOT_FOUND)
    assert await env.snapshot() == before


PUT_BODIES: list[tuple[bytes, dict[str, Any] | None]] = [
    (b"{bad", None),
    (b"[]", error("Request body must be a JSON object")),
    (DEEP, error("Request body too complex")),
    (b'{"tags":{"k":"' + b"v" * 20_000 + b'"}}', error("Request body too large")),
    (b'{"tags":"x"}', failure("You provided tags (x) as something other than a hash.")),
    (b'{"tags":[1]}', failure("You provided tags ([1]) as something other than a hash.")),
    (b'{"tags":{"a":1}}', failure("Tag value for a must be a string")),
    (b'{"tags":{"a":{"b":"c"}}}', failure("Tag value for a must be a string")),
    (b'{"tags":{"bad key!":"v"}}', failure("Invalid tag key format")),
    (b'{"tags":{"k":"' + b"v" * 256 + b'"}}', failure("Tag value too long")),
    (b'{"tags":{"k":"<script>"}}', failure("Tag value contains invalid characters")),
    (b'{"lifetime":"abc"}', failure("Lifetime must be a positive integer (got abc)")),
    (b'{"lifetime":true}', failure("Lifetime must be a positive integer (got true)")),
    (b'{"lifetime":[]}', failure("Lifetime must be a positive integer (got [])")),
    (b'{"lifetime":-5}', failure("Lifetime must be a positive integer (got -5)")),
    (b'{"lifetime":1180591620717411303424}', failure("Lifetime must be at most 2147483647")),
    (b'{"foo":1}', failure("Unknown argument foo.")),
    (
        b'{"lifetime":"x","tags":{"a":1},"z":0}',
        failure(
            "Lifetime must be a positive integer (got x)",
            "Tag value for a must be a string",
            "Unknown argument z.",
        ),
    ),
]


@pytest.mark.parametrize(("content", "expected"), PUT_BODIES)
async def test_put_body(api: tuple[ApiEnv, str], content: bytes, expected: Any) -> None:
    env, vm = api
    before = await env.snapshot()
    response = await env.client.put(f"/api/v3/vm/{vm}", content=content)
    data = body(response)
    assert response.status_code == 400
    if expected is None:
        assert data["ok"] is False
        assert data["error"].startswith("Invalid JSON: ")
    else:
        assert data == expected
    assert await env.snapshot() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v3/status?view=%FF%FE",
        "/api/v3/status?view=" + "x," * 5000,
        "/api/v3/poolstat?pool=%00,%FF",
        "/api/v3/poolstat?pool=pool1&pool=",
        "/api/v3/totalrunning?x=%ZZ",
        "/api/v3/config?%",
    ],
)
async def test_odd_queries_are_harmless(api: tuple[ApiEnv, str], path: str) -> None:
    env, _ = api
    before = await env.snapshot()
    response = await env.client.get(path)
    assert response.status_code == 200
    body(response)
    assert await env.snapshot() == before


# --- property: random input anywhere, never a 5xx (but the 503 of a valid checkout), never a change

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["pool1", "poolone", "empty", "nosuch", "", "pool 1", "pöol"]) | st.text(max_size=12)
counts = st.sampled_from(["1", "2", "0", "100", "101", "-1", "1.0", " 1"]) | json_values
checkout_bodies = (
    st.binary(max_size=64)
    | json_values.map(msgspec.json.encode)
    | st.dictionaries(names, counts, max_size=4).map(msgspec.json.encode)
)
tags = st.dictionaries(st.text(max_size=12), json_values, max_size=3) | json_values
put_bodies = (
    st.binary(max_size=64)
    | json_values.map(msgspec.json.encode)
    | st.fixed_dictionaries(
        {}, optional={"lifetime": json_values | st.text(max_size=8), "tags": tags, "other": json_values}
    ).map(msgspec.json.encode)
)
segments = st.text(max_size=40) | st.lists(names, min_size=1, max_size=5).map("+".join)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


async def _check(env: ApiEnv, method: str, path: str, content: bytes, valid_checkout: bool = False) -> None:
    before = await env.snapshot()
    response = await env.client.request(method, path, content=content)
    if valid_checkout:
        assert response.status_code in (200, 503), response.text
    else:
        assert response.status_code < 500, (method, path, content, response.text)
    data = body(response)
    if response.status_code >= 400:
        assert data["ok"] is False
        after = await env.snapshot()
        if response.status_code == 503:
            # a refused checkout records the refusal (and the compensation of any claim it had made),
            # but leaves every VM as it was
            grown = {k: after.pop(k) - before.pop(k) for k in list(before) if k.startswith("len:")}
            for key, n in grown.items():
                log = await env.events(key.removeprefix("len:"))
                assert {r.type for r in log[len(log) - n :]} <= _REFUSAL
        assert after == before, (method, path, content)


_REFUSAL = {"pool.checkout-failed", "vm.checked-out", "vm.checkout-reverted"}


def _is_valid_checkout(settings_names: set[str], wanted: Any) -> bool:
    return isinstance(wanted, list) and bool(wanted) and all(n in settings_names for n, _ in wanted)


KNOWN = {"pool1", "poolone", "empty"}


@FUZZ
@given(content=checkout_bodies)
async def test_fuzz_checkout_body(api: tuple[ApiEnv, str], content: bytes) -> None:
    env, _ = api
    parsed = parse_json_body(content)
    wanted = checkout_request_from_body(parsed) if isinstance(parsed, dict) else None
    await _check(env, "POST", "/api/v3/vm", content, _is_valid_checkout(KNOWN, wanted))


@FUZZ
@given(segment=segments)
async def test_fuzz_checkout_path(api: tuple[ApiEnv, str], segment: str) -> None:
    env, _ = api
    wanted = checkout_request_from_path(segment)
    # The test client decodes the path as an ASGI server does; an encoded "/" makes another route.
    valid = "/" not in segment and _is_valid_checkout(KNOWN, wanted)
    await _check(env, "POST", f"/api/v3/vm/{quote(segment, safe='')}", b"", valid)


@FUZZ
@given(content=put_bodies, target=st.sampled_from(["vm", "fqdn", "other"]), other=st.text(max_size=30))
async def test_fuzz_put(api: tuple[ApiEnv, str], content: bytes, target: str, other: str) -> None:
    env, vm = api
    hostname = {"vm": vm, "fqdn": f"{vm}.{DOMAIN}", "other": other}[target]
    await _check(env, "PUT", f"/api/v3/vm/{quote(hostname, safe='')}", content)


@FUZZ
@given(hostname=st.text(max_size=80) | st.sampled_from(["..", ".", "a" * 300, "%00", "pool1"]))
async def test_fuzz_delete(api: tuple[ApiEnv, str], hostname: str) -> None:
    env, _ = api
    await _check(env, "DELETE", f"/api/v3/vm/{quote(hostname, safe='')}", b"")
