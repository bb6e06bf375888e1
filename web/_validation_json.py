"""Request-body parsing with vmpooler's ``sanitize_json_body`` rules."""

from __future__ import annotations

from typing import Any

import msgspec

from web._validation_failure import ValidationFailure

__all__ = ["MAX_BODY_BYTES", "MAX_BODY_DEPTH", "parse_json_body", "parse_json_payload"]

MAX_BODY_BYTES = 10_240
MAX_BODY_DEPTH = 5

_TOO_LARGE = "Request body too large"
_TOO_COMPLEX = "Request body too complex"
_NOT_OBJECT = "Request body must be a JSON object"
_UNPARSABLE = "JSON payload could not be parsed"

# msgspec reports bad UTF-8 as UnicodeDecodeError (a ValueError) and very deep nesting as
# RecursionError; every one of them is the client's malformed JSON, never our crash.
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)


def _decode(raw: bytes) -> tuple[Any, str | None]:
    try:
        return msgspec.json.decode(raw), None
    except _DECODE_ERRORS as exc:
        return None, str(exc) or type(exc).__name__


def _deeper_than(value: Any, limit: int) -> bool:
    # vmpooler's depth: a scalar is 0, an empty container 1, any other container 1 + its
    # deepest child. Recursion stops after ``limit`` levels, so huge documents cost little.
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return limit <= 0 or any(_deeper_than(child, limit - 1) for child in children)


def parse_json_body(raw: bytes) -> dict[str, Any] | ValidationFailure:
    """Parse a request body the way vmpooler's input validator does (``POST /vm``, ``PUT /vm/<h>``).

    The size is checked BEFORE parsing, unlike vmpooler (which parses first and then compares the
    length): a deliberate divergence so that an oversized body cannot cost memory or CPU. Only the
    order differs; every body vmpooler rejects for size is still rejected with the same message.

    Args:
        raw: The request body bytes.

    Returns:
        The decoded object (``{}`` for an empty body), or a failure with key ``"error"``:
        ``Request body too large`` (> 10240 bytes), ``Invalid JSON: <parser message>``,
        ``Request body must be a JSON object``, ``Request body too complex`` (depth > 5).
    """
    if not raw:
        return {}
    if len(raw) > MAX_BODY_BYTES:
        return ValidationFailure(_TOO_LARGE)
    value, problem = _decode(raw)
    if problem is not None:
        return ValidationFailure(f"Invalid JSON: {problem}")
    if not isinstance(value, dict):
        return ValidationFailure(_NOT_OBJECT)
    if _deeper_than(value, MAX_BODY_DEPTH):
        return ValidationFailure(_TOO_COMPLEX)
    return value


def parse_json_payload(raw: bytes) -> dict[str, Any] | ValidationFailure | None:
    """Parse the body of the ondemand and config endpoints, whose failures use the ``message`` key.

    vmpooler parses these with a bare ``JSON.parse``: an empty or malformed body is
    ``JSON payload could not be parsed`` (the config endpoints 500 instead, a bug: the intent,
    shown by ``/poolreset``, is this 400). A JSON ``null`` or ``false`` is "no payload", which
    the routes answer with 404. Other non-objects crash vmpooler (500); they are a 400 here. The
    size and depth limits of :func:`parse_json_body` apply too, so no endpoint parses huge input.

    Args:
        raw: The request body bytes.

    Returns:
        The decoded object; ``None`` for ``null`` / ``false`` (the route answers 404
        ``{"ok": false}``); or a failure with key ``"message"``.
    """
    if len(raw) > MAX_BODY_BYTES:
        return ValidationFailure(_TOO_LARGE, key="message")
    value, problem = _decode(raw)
    if problem is not None:
        return ValidationFailure(_UNPARSABLE, key="message")
    if value is None or value is False:
        return None
    if not isinstance(value, dict):
        return ValidationFailure(_NOT_OBJECT, key="message")
    if _deeper_than(value, MAX_BODY_DEPTH):
        return ValidationFailure(_TOO_COMPLEX, key="message")
    return value
