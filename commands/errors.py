"""The error taxonomy of the application layer; ``web/`` maps it to HTTP in one place."""

from __future__ import annotations

__all__ = [
    "AppError",
    "ClientError",
    "ConflictError",
    "NotFound",
    "QuotaError",
    "Refused",
    "TimeoutError_",
    "Unauthorized",
]


class AppError(Exception):
    """Base of every error the application layer raises on purpose."""


class ClientError(AppError):
    """The request is malformed or names something that cannot be (HTTP 400)."""


class Unauthorized(AppError):
    """Missing or wrong credentials: a token or basic auth (HTTP 401)."""


class NotFound(AppError):
    """The VM, pool or request does not exist (HTTP 404)."""


class ConflictError(AppError):
    """The request conflicts with existing state (HTTP 409)."""


class QuotaError(AppError):
    """No capacity right now: the pool is empty or a limit is reached (HTTP 503)."""


class TimeoutError_(AppError):
    """An operation did not finish in time."""


class Refused(AppError):
    """The state machine refused an event: the VM is not in a state that allows it.

    Attributes:
        vm: the VM the refused event was about.
        event_type: the refused event's tag.
        state: the VM's state at the time ("" if the pool has no such VM).
    """

    def __init__(self, vm: str, event_type: str, state: str) -> None:
        super().__init__(f"{event_type} refused for {vm!r} in state {state or 'unknown'!r}")
        self.vm = vm
        self.event_type = event_type
        self.state = state
