"""Pure parts of ``/summary``: the date range it is asked for, and its bodies (vmpooler §1.2).

Where vmpooler's aggregates are wrong we compute them right: the range's ``duration`` has a true
``average`` (total / count), ``min`` and ``max``, and each pool's range ``average`` is its total over
its count (vmpooler omits the former and averages the daily mins and maxes for the latter).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any

from projectors.daily_stats import DailyStatsView, DurationStats
from projectors.read_stats import combine
from web._validation_failure import ValidationFailure

from ._render import ruby_round
from ._render_status import task_body

__all__ = ["MAX_SUMMARY_DAYS", "TASKS", "date_range", "summary_body", "tag_section", "task_section"]

TASKS = ("boot", "clone")
MAX_SUMMARY_DAYS = 366
"""The longest range served (vmpooler has no limit, so one request could ask for centuries of days)."""

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)

Days = Mapping[str, Mapping[str, DailyStatsView]]
"""Day -> pool -> statistics, as ``StatsReader.days`` returns them."""


def _parse_date(value: str) -> date | ValidationFailure:
    invalid = ValidationFailure(f"Invalid date format '{value}', must match YYYY-MM-DD.")
    if not _DATE.fullmatch(value):
        return invalid
    try:
        return date.fromisoformat(value)
    except ValueError:  # vmpooler's Date.parse raises here (500); the format message fits
        return invalid


def date_range(from_param: str | None, to_param: str | None, today: str) -> list[str] | ValidationFailure:
    """The days (``YYYY-MM-DD``, inclusive) of ``?from=&to=``, each defaulting to ``today``.

    Returns:
        The days, or vmpooler's ``Invalid date format '<x>', must match YYYY-MM-DD.`` /
        ``Date range is invalid, 'to' cannot come before 'from'.`` /
        ``Date range is invalid, 'from' must be in the past.``, or (ours) a range longer than
        :data:`MAX_SUMMARY_DAYS`.
    """
    parsed: list[date] = []
    for value in (today if from_param is None else from_param, today if to_param is None else to_param):
        day = _parse_date(value)
        if isinstance(day, ValidationFailure):
            return day
        parsed.append(day)
    first, last = parsed
    if last < first:
        return ValidationFailure("Date range is invalid, 'to' cannot come before 'from'.")
    if first > date.fromisoformat(today):
        return ValidationFailure("Date range is invalid, 'from' must be in the past.")
    if (last - first).days >= MAX_SUMMARY_DAYS:
        return ValidationFailure(f"Date range is invalid, it may span at most {MAX_SUMMARY_DAYS} days.")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _pool_duration(stats: DurationStats) -> dict[str, float]:
    return {
        "total": float(stats.total),
        "average": ruby_round(stats.total / stats.count, 1),
        "min": float(stats.min),
        "max": float(stats.max),
    }


def _task_stats(per_pool: Mapping[str, DurationStats]) -> dict[str, Any]:
    """``{"duration": {average, min, max, total[, pool]}, "count": {total[, pool]}}`` over the pools;
    the ``pool`` breakdowns (pools with data only) are there when there is any data."""
    body = task_body(combine(per_pool.values()))
    busy = {pool: stats for pool, stats in per_pool.items() if stats.count}
    if busy:
        body["duration"]["pool"] = {pool: _pool_duration(stats) for pool, stats in busy.items()}
        body["count"]["pool"] = {pool: {"total": stats.count} for pool, stats in busy.items()}
    return body


def _only(body: dict[str, Any], key: str | None) -> dict[str, Any]:
    return body if key is None else {k: v for k, v in body.items() if k == key}


def _of(view: DailyStatsView, task: str) -> DurationStats:
    return view.boot if task == "boot" else view.clone


def task_section(task: str, days: Days, key: str | None = None) -> dict[str, Any]:
    """``/summary/<boot|clone>[/<key>]``: ``{"<task>": <range stats>, "daily": [{"date", "<task>"}, ...]}``;
    ``key`` keeps only ``duration`` or ``count`` (another key keeps nothing)."""
    pools = {pool for day in days.values() for pool in day}
    overall = {
        pool: combine(_of(days[d][pool], task) for d in days if pool in days[d]) for pool in sorted(pools)
    }
    daily = [
        {"date": d, task: _only(_task_stats({p: _of(v, task) for p, v in views.items()}), key)}
        for d, views in days.items()
    ]
    return {task: _only(_task_stats(overall), key), "daily": daily}


def _tag_counts(views: Iterable[DailyStatsView], key: str | None) -> dict[str, dict[str, int]]:
    """``{"<tag>": {"<value>": n, ..., "total": n}}`` summed over ``views`` (one tag if ``key``)."""
    counts: dict[str, dict[str, int]] = {}
    for view in views:
        for tag, values in view.tags.items():
            if key is not None and tag != key:
                continue
            out = counts.setdefault(tag, {})
            for value, n in values.items():
                out[value] = out.get(value, 0) + n
    for out in counts.values():
        out["total"] = sum(out.values())
    return dict(sorted(counts.items()))


def tag_section(days: Days, key: str | None = None) -> dict[str, Any]:
    """``/summary/tag[/<key>]``: how often each tag value was set, per day and over the range."""
    every = [view for views in days.values() for view in views.values()]
    daily = [{"date": d, "tag": _tag_counts(views.values(), key)} for d, views in days.items()]
    return {"tag": _tag_counts(every, key), "daily": daily}


def summary_body(days: Days) -> dict[str, Any]:
    """``/summary``: ``{"boot", "clone", "tag", "daily": [{"date", "boot", "clone", "tag"}, ...]}``."""
    boot, clone, tag = task_section("boot", days), task_section("clone", days), tag_section(days)
    daily = [
        {"date": b["date"], "boot": b["boot"], "clone": c["clone"], "tag": t["tag"]}
        for b, c, t in zip(boot["daily"], clone["daily"], tag["daily"], strict=True)
    ]
    return {"boot": boot["boot"], "clone": clone["clone"], "tag": tag["tag"], "daily": daily}
