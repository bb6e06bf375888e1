"""JSON responses shaped like vmpooler's (``JSON.pretty_generate``: 2-space indent, insertion order),
and reading a request body without ever holding more than the validator accepts."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.enums import MediaType

from web.validation import MAX_BODY_BYTES

__all__ = ["OK", "OVERSIZE", "json_response", "read_body"]

OK: dict[str, Any] = {"ok": True}

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    """``body`` as pretty-printed JSON (dict key order kept, as vmpooler emits it)."""
    return Response(
        content=msgspec.json.format(_encoder.encode(body), indent=2),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


OVERSIZE = b" " * (MAX_BODY_BYTES + 1)
"""Stands for a body over the limit: the validators refuse it by its size alone, without parsing, so
"Request body too large" stays worded in one place (``web.validation``)."""


async def read_body(request: Request[Any, Any, Any], limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, or :data:`OVERSIZE` when it is larger than ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; otherwise the
    body is read in chunks and reading stops as soon as it passes the limit, so a huge body never
    costs more than ``limit`` bytes of memory.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 12 or int(declared) > limit):
        return OVERSIZE
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return OVERSIZE
        chunks.append(chunk)
    return b"".join(chunks)
