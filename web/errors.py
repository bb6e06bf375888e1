"""The one place that turns errors into HTTP answers with vmpooler's JSON bodies.

* validation failures -> their status (400) with ``{"ok": false, "error": ...}`` or, for
  ``PUT /vm/<hostname>``, ``{"ok": false, "failure": [...]}``;
* ``commands.errors``: not found 404, unauthorized 401, :class:`Forbidden` 403, quota 503, client
  400, conflict/refused 409 (vmpooler's bodies:
  ``{"ok": false}``, plus ``error`` where vmpooler has no answer of its own);
* Litestar's own: unknown route 404 and wrong method 405, both ``{"ok": false}``; other 4xx keep
  their status with ``error``;
* Redis unreachable -> 503 ``{"ok": false}``; anything else -> 500 ``{"ok": false}`` and a log
  line (a last resort: no input may reach it).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from commands.errors import (
    AppError,
    ClientError,
    ConflictError,
    NotFound,
    QuotaError,
    Refused,
    TimeoutError_,
    Unauthorized,
)
from web._json import json_response
from web._paths import method_of, route_of
from web.validation import ValidationError, ValidationFailure, VmUpdateRejected

__all__ = ["EXCEPTION_HANDLERS", "Forbidden", "UpdateRejected", "check"]

log = logging.getLogger(__name__)

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]

_NOT_OK: dict[str, Any] = {"ok": False}


class Forbidden(AppError):
    """The requester is known but may not do this (pool control by a non-admin): 403."""


class UpdateRejected(Exception):
    """``PUT /vm/<hostname>``'s collected failures, raised for :func:`_update_rejected` to render."""

    def __init__(self, rejected: VmUpdateRejected) -> None:
        super().__init__("; ".join(rejected.failures))
        self.rejected = rejected


def check(result: T | ValidationFailure | VmUpdateRejected) -> T:
    """A validator's value, or its failure raised for the handlers below.

    Raises:
        ValidationError: for a :class:`ValidationFailure`.
        UpdateRejected: for a :class:`VmUpdateRejected`.
    """
    if isinstance(result, ValidationFailure):
        raise ValidationError(result)
    if isinstance(result, VmUpdateRejected):
        raise UpdateRejected(result)
    return result


def _validation(_: AnyRequest, exc: ValidationError) -> Response[bytes]:
    return json_response(exc.failure.body(), exc.failure.status)


def _update_rejected(_: AnyRequest, exc: UpdateRejected) -> Response[bytes]:
    return json_response(exc.rejected.body(), exc.rejected.status)


def _app_error(request: AnyRequest, exc: AppError) -> Response[bytes]:
    if isinstance(exc, NotFound):
        return json_response(_NOT_OK, 404)
    if isinstance(exc, Forbidden):
        return json_response({"ok": False, "error": str(exc)}, 403)
    if isinstance(exc, Unauthorized):
        return json_response(
            _NOT_OK, 401, headers={"WWW-Authenticate": 'Basic realm="Authentication required"'}
        )
    if isinstance(exc, QuotaError | TimeoutError_):
        return json_response(_NOT_OK, 503)
    if isinstance(exc, ClientError):
        return json_response({"ok": False, "error": str(exc)}, 400)
    if isinstance(exc, ConflictError | Refused):
        return json_response({"ok": False, "error": str(exc)}, 409)
    return _internal(request, exc)


def _http(_: AnyRequest, exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if status in (404, 405):
        # Unknown route or method: vmpooler's bare {"ok": false}; 405 keeps Litestar's Allow header.
        return json_response(_NOT_OK, status, headers=exc.headers)
    if status < 500:
        return json_response({"ok": False, "error": exc.detail}, status, headers=exc.headers)
    return json_response(_NOT_OK, status)


def _redis_down(request: AnyRequest, exc: Exception) -> Response[bytes]:
    log.warning("%s %s: Redis unavailable: %s", method_of(request.scope), route_of(request.scope), exc)
    return json_response(_NOT_OK, 503)


def _internal(request: AnyRequest, exc: Exception) -> Response[bytes]:
    log.error("%s %s failed", method_of(request.scope), route_of(request.scope), exc_info=exc)
    return json_response(_NOT_OK, 500)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationError: _validation,
    UpdateRejected: _update_rejected,
    AppError: _app_error,
    HTTPException: _http,
    RedisConnectionError: _redis_down,
    RedisTimeoutError: _redis_down,
    Exception: _internal,
}
