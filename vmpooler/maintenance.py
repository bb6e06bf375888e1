"""The CLI's offline commands: audits (``events``), rebuilds and retention (``archive``)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path

import msgspec

from commands.retention import archive_log
from events import CONTROL, Recorded
from events.archive import ArchiveError, check_whole
from events.streams import text
from projectors.audit import AuditLog

from ._output import json_printable, printable
from .wiring import Service

__all__ = ["archive", "audit", "format_event", "parse_time", "rebuild_projections", "rebuild_state"]

_AGE = re.compile(r"^(\d+)([smhd])$")


def _archive_dir(args: argparse.Namespace) -> Path | None:
    value = getattr(args, "archive", None)
    return Path(value) if value else None


def parse_time(text: str, now: float | None = None) -> int:
    """Milliseconds since the epoch for an ISO 8601 time, epoch ms, or an age (``30m``, ``2h``, ``7d``)."""
    now = time.time() if now is None else now
    if m := _AGE.match(text):
        seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return int((now - seconds) * 1000)
    if text.isdigit():
        return int(text)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601, epoch ms, or an age like 30m, 2h, 7d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def format_event(r: Recorded, as_json: bool) -> str:
    """One event as a line of ``vmpooler events``: text for people, or JSON (``--json``); control
    characters in names, actors and tags are escaped either way (see :mod:`vmpooler._output`)."""
    body = msgspec.json.encode(r.event).decode()
    if as_json:
        envelope = msgspec.structs.asdict(r)
        envelope["event"] = msgspec.json.decode(body)
        return json_printable(msgspec.json.encode(envelope).decode())
    when = (
        dt.datetime.fromtimestamp(r.at / 1000, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    stream, vm, kind, actor = (printable(part) for part in (r.stream, r.vm or "-", r.type, r.actor))
    return f"{when}  {stream:<16} {vm:<22} {kind:<22} {actor:<24} {json_printable(body)}"


def _say(message: str) -> None:
    """A note or error of these commands, on stderr, safe to show."""
    print(f"vmpooler: {printable(message)}", file=sys.stderr)


async def audit(service: Service, args: argparse.Namespace) -> int:
    """``vmpooler events``: print events from the log (its archived part too with ``--archive``)."""
    log = AuditLog(service.redis.client, service.keys, archive=_archive_dir(args))
    try:
        return await _audit(service, log, args)
    except ArchiveError as exc:
        _say(str(exc))
        return 2


async def _audit(service: Service, log: AuditLog, args: argparse.Namespace) -> int:
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if log.archive is None:
        for pool in [*service.pools, CONTROL]:
            if through := text(await service.redis.client.get(service.keys.archived(pool))):
                _say(f"{pool}: events up to {through} are in the archive (--archive)")
    if args.vm:
        history = await log.for_vm(args.vm)
        if not history:
            _say(f"no events for VM {args.vm!r}")
            return 1
        for r in history:
            if (since is None or r.at >= since) and (until is None or r.at <= until):
                print(format_event(r, args.json), flush=True)
        return 0
    pools = [args.pool] if args.pool else sorted({*await log.pools(), *service.pools})
    if args.pool and args.pool not in await log.pools():
        _say(f"no events for pool {args.pool!r}")
        return 1
    if args.follow:
        async for r in log.follow(pools, since, give_up_after_s=service.settings.redis.startup_timeout):
            print(format_event(r, args.json), flush=True)
        return 0
    for pool in pools:
        async for r in log.for_pool(pool, since, until):
            print(format_event(r, args.json), flush=True)
    return 0


async def rebuild_projections(service: Service, args: argparse.Namespace) -> int:
    """``vmpooler projections rebuild``: drop every read model and fold the whole log again."""
    archive = _archive_dir(args)
    try:
        n = await service.projections().rebuild(archive)
        n += await service.ondemand_projections().rebuild(archive)
    except ArchiveError as exc:
        _say(str(exc))
        return 2
    print(f"rebuilt {len(service.pools)} pools' read models from {n} events")
    return 0


async def rebuild_state(service: Service, args: argparse.Namespace) -> int:
    """``vmpooler state rebuild``: replay every log into the pools' decision state."""
    archive = _archive_dir(args)
    logs = [*service.pools, CONTROL]  # the control log holds the on-demand requests
    try:
        for pool in logs:  # every log readable whole before anything is replaced
            await check_whole(service.redis.client, service.keys, pool, archive)
    except ArchiveError as exc:
        _say(str(exc))
        return 2
    refused = 0
    for pool in logs:
        refused += await service.commands.rebuild_state(pool, archive=archive)
    print(f"rebuilt decision state of {len(service.pools)} pools ({refused} entries refused)")
    return 1 if refused else 0


async def archive(service: Service, args: argparse.Namespace) -> int:
    """``vmpooler archive --before T --to DIR``: move what every reader is done with out of Redis."""
    before, directory = parse_time(args.before), Path(args.to)
    redis, keys = service.redis.client, service.keys
    runners = [service.projections(), service.ondemand_projections()]
    logs = [*sorted({*(await AuditLog(redis, keys).pools()), *service.pools}), CONTROL]
    total = 0
    for pool in logs:
        checkpoints = [
            runner.checkpoint_key(p, pool)
            for runner in runners
            if pool in runner.pools
            for p in runner.projections
        ]
        try:
            done = await archive_log(redis, keys, pool, directory, before_ms=before, checkpoints=checkpoints)
        except OSError as exc:  # nothing of this log was trimmed: its segment was not written whole
            _say(f"cannot write the archive in {directory}: {exc}")
            return 2
        total += done.entries
        held = f" (held back by {done.held_back_by})" if done.held_back_by and done.entries == 0 else ""
        print(
            printable(
                f"{pool}: {done.entries} events archived, archive reaches {done.through or 'nothing'}{held}"
            )
        )
    print(printable(f"archived {total} events to {directory}"))
    return 0
