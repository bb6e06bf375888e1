"""``GET /api/v3/summary[/<section>[/<key>]]``: daily and range clone/boot statistics from the
daily-stats projection, vmpooler's date validation (as JSON), and right aggregates (reference §1.2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.integration._api import ApiEnv, api_env, body, make_settings

SETTINGS = make_settings(
    [{"name": "pool1", "size": 2}, {"name": "pool2", "size": 1}, {"name": "pool3", "size": 0}]
)
DAY1, DAY2 = "2026-01-01", "2026-01-02"
EMPTY = {"duration": {"average": 0, "min": 0, "max": 0, "total": 0}, "count": {"total": 0}}


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    """Day 1: pool1 clones 10 s and 20 s, boots 30 s and 50 s. Day 2 (today): pool1 clones 90 s and
    boots 100 s, pool2 clones 40 s and boots 60 s."""
    async with api_env(redis, redis_url, prefix, SETTINGS) as env:
        await env.seed("pool1", 2, clone_seconds=[10, 20], boot_seconds=[30, 50])
        env.clock.advance(hours=24)
        await env.seed("pool1", 1, size=3, clone_seconds=[90], boot_seconds=[100])
        await env.seed("pool2", 1, clone_seconds=[40], boot_seconds=[60])
        yield env


def pool(total: float, average: float, lo: float, hi: float) -> dict[str, float]:
    return {"total": total, "average": average, "min": lo, "max": hi}


def stats(
    average: float,
    lo: float,
    hi: float,
    total: float,
    count: int,
    pools: dict[str, tuple[dict[str, float], int]],
) -> dict[str, Any]:
    return {
        "duration": {
            "average": average,
            "min": lo,
            "max": hi,
            "total": total,
            "pool": {p: d for p, (d, _) in pools.items()},
        },
        "count": {"total": count, "pool": {p: {"total": n} for p, (_, n) in pools.items()}},
    }


CLONE_DAY1 = stats(15.0, 10.0, 20.0, 30.0, 2, {"pool1": (pool(30.0, 15.0, 10.0, 20.0), 2)})
CLONE_DAY2 = stats(
    65.0,
    40.0,
    90.0,
    130.0,
    2,
    {"pool1": (pool(90.0, 90.0, 90.0, 90.0), 1), "pool2": (pool(40.0, 40.0, 40.0, 40.0), 1)},
)
# pool1's range average is 120/3 = 40.0 (vmpooler: the mean of daily mins and maxes, 52.5).
CLONE_RANGE = stats(
    40.0,
    10.0,
    90.0,
    160.0,
    4,
    {"pool1": (pool(120.0, 40.0, 10.0, 90.0), 3), "pool2": (pool(40.0, 40.0, 40.0, 40.0), 1)},
)
BOOT_DAY1 = stats(40.0, 30.0, 50.0, 80.0, 2, {"pool1": (pool(80.0, 40.0, 30.0, 50.0), 2)})
BOOT_DAY2 = stats(
    80.0,
    60.0,
    100.0,
    160.0,
    2,
    {"pool1": (pool(100.0, 100.0, 100.0, 100.0), 1), "pool2": (pool(60.0, 60.0, 60.0, 60.0), 1)},
)
BOOT_RANGE = stats(
    60.0,
    30.0,
    100.0,
    240.0,
    4,
    {"pool1": (pool(180.0, 60.0, 30.0, 100.0), 3), "pool2": (pool(60.0, 60.0, 60.0, 60.0), 1)},
)


async def get(api: ApiEnv, path: str) -> tuple[int, Any]:
    response = await api.client.get(path)
    return response.status_code, body(response)


async def test_summary_over_a_range_has_daily_entries_and_right_aggregates(api: ApiEnv) -> None:
    status, got = await get(api, f"/api/v3/summary?from={DAY1}&to={DAY2}")
    assert status == 200
    assert list(got) == ["boot", "clone", "tag", "daily"]
    assert got["daily"] == [
        {"date": DAY1, "boot": BOOT_DAY1, "clone": CLONE_DAY1, "tag": {}},
        {"date": DAY2, "boot": BOOT_DAY2, "clone": CLONE_DAY2, "tag": {}},
    ]
    assert (got["boot"], got["clone"], got["tag"]) == (BOOT_RANGE, CLONE_RANGE, {})


async def test_summary_defaults_to_today(api: ApiEnv) -> None:
    status, got = await get(api, "/api/v3/summary")
    assert status == 200
    assert got == {
        "boot": BOOT_DAY2,
        "clone": CLONE_DAY2,
        "tag": {},
        "daily": [{"date": DAY2, "boot": BOOT_DAY2, "clone": CLONE_DAY2, "tag": {}}],
    }
    assert await get(api, f"/api/v3/summary?from={DAY2}") == (200, got)
    assert await get(api, f"/api/v3/summary?to={DAY2}") == (200, got)


async def test_days_without_data_are_zeros_and_to_may_be_in_the_future(api: ApiEnv) -> None:
    status, got = await get(api, "/api/v3/summary?from=2025-12-31&to=2026-01-03")
    assert status == 200
    assert [d["date"] for d in got["daily"]] == ["2025-12-31", DAY1, DAY2, "2026-01-03"]
    for day in (got["daily"][0], got["daily"][3]):
        assert (day["boot"], day["clone"], day["tag"]) == (EMPTY, EMPTY, {})
    assert got["clone"] == CLONE_RANGE
    empty = await get(api, "/api/v3/summary?from=2025-12-30&to=2025-12-31")
    assert empty[1]["clone"] == EMPTY
    assert empty[1]["boot"] == EMPTY


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("from=2026-1-01", "Invalid date format '2026-1-01', must match YYYY-MM-DD."),
        ("to=yesterday", "Invalid date format 'yesterday', must match YYYY-MM-DD."),
        ("from=", "Invalid date format '', must match YYYY-MM-DD."),
        ("from=2026-02-30", "Invalid date format '2026-02-30', must match YYYY-MM-DD."),
        ("from=%EF%BC%92026-01-01", "Invalid date format '\uff12026-01-01', must match YYYY-MM-DD."),
        ("from=2026-01-02&to=2026-01-01", "Date range is invalid, 'to' cannot come before 'from'."),
        ("from=2026-01-03&to=2026-01-04", "Date range is invalid, 'from' must be in the past."),
        ("from=2020-01-01&to=2026-01-01", "Date range is invalid, it may span at most 366 days."),
    ],
)
@pytest.mark.parametrize(
    "path", ["/api/v3/summary", "/api/v3/summary/boot", "/api/v3/summary/tag/x", "/api/v3/summary/nosuch"]
)
async def test_bad_dates_are_400_json(api: ApiEnv, path: str, query: str, error: str) -> None:
    """Divergence: vmpooler answers these with the bare message as a (mislabelled) text body."""
    before = await api.snapshot()
    assert await get(api, f"{path}?{query}") == (400, {"ok": False, "error": error})
    assert await api.snapshot() == before


async def test_a_year_is_allowed(api: ApiEnv) -> None:
    status, got = await get(api, "/api/v3/summary/clone?from=2025-01-02&to=2026-01-02")
    assert status == 200
    assert len(got["daily"]) == 366


async def test_boot_and_clone_sections(api: ApiEnv) -> None:
    query = f"?from={DAY1}&to={DAY2}"
    assert await get(api, f"/api/v3/summary/clone{query}") == (
        200,
        {
            "clone": CLONE_RANGE,
            "daily": [{"date": DAY1, "clone": CLONE_DAY1}, {"date": DAY2, "clone": CLONE_DAY2}],
        },
    )
    status, boot = await get(api, f"/api/v3/summary/boot/{query}")
    assert (status, list(boot), boot["boot"]) == (200, ["boot", "daily"], BOOT_RANGE)


@pytest.mark.parametrize("key", ["duration", "count"])
async def test_section_key_keeps_one_part(api: ApiEnv, key: str) -> None:
    status, got = await get(api, f"/api/v3/summary/boot/{key}?from={DAY1}&to={DAY2}")
    assert status == 200
    assert got == {
        "boot": {key: BOOT_RANGE[key]},
        "daily": [
            {"date": DAY1, "boot": {key: BOOT_DAY1[key]}},
            {"date": DAY2, "boot": {key: BOOT_DAY2[key]}},
        ],
    }


async def test_unknown_key_keeps_nothing(api: ApiEnv) -> None:
    assert await get(api, "/api/v3/summary/clone/nosuch") == (
        200,
        {"clone": {}, "daily": [{"date": DAY2, "clone": {}}]},
    )


@pytest.mark.parametrize("path", ["/api/v3/summary/tag", "/api/v3/summary/tag/jenkins_build_url"])
async def test_tag_section_is_empty_without_tags(api: ApiEnv, path: str) -> None:
    assert await get(api, f"{path}?from={DAY1}&to={DAY2}") == (
        200,
        {
            "tag": {},
            "daily": [{"date": DAY1, "tag": {}}, {"date": DAY2, "tag": {}}],
        },
    )


@pytest.mark.parametrize("path", ["/api/v3/summary/nosuch", "/api/v3/summary/daily/count"])
async def test_unknown_section_is_404(api: ApiEnv, path: str) -> None:
    status, got = await get(api, path)
    assert (status, got) == (404, {"ok": False})


async def test_tag_section_counts_tag_values_per_day_and_over_the_range(api: ApiEnv) -> None:
    a, b, *_ = await api.in_state("pool1", "ready")
    (c,) = await api.in_state("pool2", "ready")
    for vm, team in ((a, "ci"), (b, "ci"), (c, "qa")):
        response = await api.client.put(f"/api/v3/vm/{vm}", json={"tags": {"team": team, "os": "linux"}})
        assert response.status_code == 200, response.text
    await api.project()
    today = {"os": {"linux": 3, "total": 3}, "team": {"ci": 2, "qa": 1, "total": 3}}
    assert await get(api, f"/api/v3/summary/tag?from={DAY1}&to={DAY2}") == (
        200,
        {
            "tag": today,
            "daily": [{"date": DAY1, "tag": {}}, {"date": DAY2, "tag": today}],
        },
    )
    assert await get(api, "/api/v3/summary/tag/team") == (
        200,
        {
            "tag": {"team": today["team"]},
            "daily": [{"date": DAY2, "tag": {"team": today["team"]}}],
        },
    )
