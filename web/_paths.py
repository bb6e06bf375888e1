"""What of a request's path may reach a log line or a metric label: its route template.

A raw path can carry a secret (``/api/v3/token/<token>``) and takes any value a client makes up, so
logs and metrics name the route it matched (``/api/v3/token/{token}``) and one word for a path
that matched none.
"""

from __future__ import annotations

from typing import Any, cast

from litestar.types import Scope

__all__ = ["UNMATCHED", "method_of", "route_of"]

UNMATCHED = "<unmatched>"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def route_of(scope: Scope) -> str:
    """The route template the request matched, or :data:`UNMATCHED`."""
    template = cast(dict[str, Any], scope).get("path_template")
    return template if isinstance(template, str) and template else UNMATCHED


def method_of(scope: Scope) -> str:
    """The request's method, or ``OTHER`` for one HTTP does not define (a client may send any token)."""
    method = str(scope.get("method", ""))
    return method if method in _METHODS else "OTHER"
