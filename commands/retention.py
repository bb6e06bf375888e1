"""Retention: move the oldest part of a log into an archive, then trim it from Redis.

Never implicit (DESIGN): an operator runs it (``vmpooler archive``). Only entries that every reader
is done with are moved: older than the given time, delivered to every consumer group and acknowledged,
and folded by every projection given. Each segment is written and synced before, in one atomic step,
its entries are trimmed and the stream's ``archived`` key records how far the archive reaches, so a
crash at any point loses nothing (at worst a segment is written twice; the reader skips what is past
``archived``, and a rerun starts after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from events import Keys
from events.archive import read_segment, write_segment
from events.streams import position, text, xrange

__all__ = ["Archived", "archive_log"]

# KEYS: stream, archived marker. ARGV: the marker we read, the new marker, the first id to keep.
_TRIM = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return -1 end
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
return n
"""


class Archived(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``archive_log`` call did.

    Attributes:
        entries: entries written to the archive and trimmed from the stream.
        through: the last archived position of the stream (``""``: nothing was ever archived).
        held_back_by: what stopped the archive short of the requested time (``""``: nothing did).
    """

    entries: int
    through: str
    held_back_by: str = ""


def _after(entry_id: str) -> str:
    """The smallest id after ``entry_id``."""
    ms, seq = position(entry_id)
    return f"{ms}-{seq + 1}"


async def _bound(redis: Redis, stream: str, before_ms: int, checkpoints: Sequence[str]) -> tuple[str, str]:
    """The first id that must stay, and why (the earliest of every reader's needs)."""
    bounds = [(f"{before_ms}-0", "")]
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no stream: nothing to archive
        return "0-0", "no log"
    for g in groups:
        name = text(g["name"])
        bounds.append((_after(text(g["last-delivered-id"])), f"consumer group {name!r}"))
        pending = await redis.xpending(stream, name)
        if int(pending["pending"]):
            bounds.append((text(pending["min"]), f"unacknowledged entries of {name!r}"))
    for key in checkpoints:
        checkpoint = text(await redis.get(key))
        bounds.append((_after(checkpoint) if checkpoint else "0-0", f"projection checkpoint {key}"))
    return min(bounds, key=lambda b: position(b[0]))


async def archive_log(
    redis: Redis,
    keys: Keys,
    pool: str,
    directory: Path,
    *,
    before_ms: int,
    checkpoints: Sequence[str],
    segment: int = 10_000,
) -> Archived:
    """Archive and trim the entries of ``pool``'s log that are older than ``before_ms`` (epoch ms)
    and that no reader needs any more.

    Args:
        redis: client (bytes replies).
        keys: key names.
        pool: the pool (or ``events.CONTROL``) whose log to archive.
        directory: the archive (segments go to ``<directory>/<pool>/``); keep it: rebuilds and
            audits of the whole log read it.
        before_ms: only entries appended before this time (the Redis clock of their ids) move.
        checkpoints: checkpoint keys of every projection that folds this log; one that is missing
            (a projection that never ran here) keeps everything.
        segment: most entries per archive file.

    Raises:
        RuntimeError: another archive run trimmed this log meanwhile (nothing of ours was trimmed).
    """
    stream, marker = keys.stream(pool), keys.archived(pool)
    upper, why = await _bound(redis, stream, before_ms, checkpoints)
    through = text(await redis.get(marker))
    start, moved = (f"({through}" if through else "-"), 0
    if position(upper) == (0, 0):  # nothing may move (and "(0-0" is no valid bound)
        return Archived(entries=0, through=through, held_back_by=why)
    while entries := await xrange(redis, stream, min=start, max=f"({upper}", count=segment):
        last = text(entries[-1][0])
        path = write_segment(directory, pool, entries)
        if read_segment(path) != entries:
            raise RuntimeError(f"the archive segment {path} does not read back")
        if int(await redis.eval(_TRIM, 2, stream, marker, through, last, _after(last))) < 0:
            raise RuntimeError(f"the log of {pool!r} was archived by someone else meanwhile")
        moved, through, start = moved + len(entries), last, f"({last}"
    return Archived(entries=moved, through=through, held_back_by=why)
