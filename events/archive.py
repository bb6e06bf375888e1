"""The archived part of a log: segments of entries moved out of Redis into files, and reading a
whole log back (archive first, then what is still in Redis).

A segment is one gzip file of JSON lines, ``{"pos": "<ms>-<seq>", "f": {<field>: <text>}}``, named
``<dir>/<pool>/<first pos>_<last pos>.jsonl.gz``; segments of one pool never overlap. When entries
are trimmed from a stream, the stream's ``archived`` key records the last trimmed position in the same
atomic step, so a reader knows the stream alone is no longer the whole log.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import msgspec
from redis.asyncio import Redis

from .keys import Keys
from .streams import Entry, position, text, xrange

__all__ = [
    "ArchiveError",
    "archived_through",
    "check_whole",
    "log_batches",
    "read_segment",
    "read_segments",
    "write_segment",
]


class ArchiveError(Exception):
    """The log cannot be read whole: part of it is archived and the archive is missing or short."""


class _Line(msgspec.Struct, frozen=True):
    pos: str
    f: dict[str, str]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Line)


def write_segment(directory: Path, pool: str, entries: Sequence[Entry]) -> Path:
    """Write ``entries`` (in log order) as one segment of ``pool`` under ``directory``; the file
    appears only once complete and synced, so a crash leaves no partial segment behind."""
    first, last = text(entries[0][0]), text(entries[-1][0])
    folder = directory / pool
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{first}_{last}.jsonl.gz"
    partial = final.with_suffix(".partial")
    with partial.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as out:
            for pos, fields in entries:
                line = _Line(text(pos), {text(k): text(v) for k, v in fields.items()})
                out.write(_encoder.encode(line) + b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    partial.rename(final)
    return final


def _segments(directory: Path, pool: str) -> list[Path]:
    folder = directory / pool
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jsonl.gz"), key=lambda p: position(p.name.split("_", 1)[0]))


def archived_through(directory: Path, pool: str) -> str:
    """The last position archived for ``pool`` in ``directory`` (``"0-0"`` for none), from the
    segments' names."""
    segments = _segments(directory, pool)
    return segments[-1].name.split("_", 1)[1].removesuffix(".jsonl.gz") if segments else "0-0"


def read_segment(path: Path) -> list[Entry]:
    """The entries of one segment file, in log order."""
    with gzip.open(path, "rb") as lines:
        return [
            (line.pos.encode(), {k.encode(): v.encode() for k, v in line.f.items()})
            for line in map(_decoder.decode, lines)
        ]


def read_segments(directory: Path, pool: str) -> Iterator[list[Entry]]:
    """Every archived entry of ``pool``, one list per segment, in log order."""
    for segment in _segments(directory, pool):
        yield read_segment(segment)


async def check_whole(redis: Redis, keys: Keys, pool: str, archive: Path | None) -> str:
    """Check that the whole log of ``pool`` can be read (see :func:`log_batches`); returns the
    last archived position (``""`` when nothing was archived).

    Raises:
        ArchiveError: part of the stream was archived and ``archive`` is not given, or does not
            reach the last archived position.
    """
    through = text(await redis.get(keys.archived(pool)))
    if through:
        if archive is None:
            raise ArchiveError(
                f"the log of {pool!r} was archived up to {through}: give the archive directory (--archive)"
            )
        reaches = archived_through(archive, pool)
        if position(reaches) < position(through):
            raise ArchiveError(f"the archive of {pool!r} in {archive} ends at {reaches}, not at {through}")
    return through


async def log_batches(
    redis: Redis, keys: Keys, pool: str, *, batch: int, archive: Path | None = None
) -> AsyncIterator[list[Entry]]:
    """The whole log of ``pool`` in batches, oldest first: the archived entries from ``archive``
    (when part of the stream was archived), then the stream's.

    Raises:
        ArchiveError: part of the stream was archived and ``archive`` is not given, or does not
            reach the last archived position.
    """
    through = await check_whole(redis, keys, pool, archive)
    start = "-"
    if through and archive is not None:
        for entries in read_segments(archive, pool):
            kept = [e for e in entries if position(text(e[0])) <= position(through)]
            for i in range(0, len(kept), batch):
                yield kept[i : i + batch]
        start = f"({through}"
    while entries := await xrange(redis, keys.stream(pool), min=start, count=batch):
        yield entries
        start = f"({text(entries[-1][0])}"
