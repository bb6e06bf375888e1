"""The failure values returned by the validators, and how a route turns them into a response."""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

__all__ = ["ValidationError", "ValidationFailure", "VmUpdateRejected", "unwrap"]

T = TypeVar("T")


class ValidationFailure(msgspec.Struct, frozen=True):
    """One rejected input, carrying vmpooler's exact message.

    Attributes:
        message: The human-readable text vmpooler sends (compared verbatim by clients and tests).
        status: The HTTP status to answer with.
        key: The body key the message goes under: ``"error"`` for the input validator's
            failures, ``"message"`` for the ondemand / config endpoints.
    """

    message: str
    status: int = 400
    key: Literal["error", "message"] = "error"

    def body(self) -> dict[str, object]:
        """The JSON body to send, ``{"ok": false, <key>: <message>}`` in that key order."""
        return {"ok": False, self.key: self.message}


class VmUpdateRejected(msgspec.Struct, frozen=True):
    """A ``PUT /vm/<hostname>`` body that failed validation; vmpooler collects every failure.

    Attributes:
        failures: The failure strings in the order vmpooler produces them.
        status: The HTTP status to answer with.
    """

    failures: tuple[str, ...]
    status: int = 400

    def body(self) -> dict[str, object]:
        """The JSON body to send, ``{"ok": false, "failure": [...]}``."""
        return {"ok": False, "failure": list(self.failures)}


class ValidationError(Exception):
    """Raised by :func:`unwrap` so a route can leave the rendering to one exception handler."""

    def __init__(self, failure: ValidationFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def unwrap(result: T | ValidationFailure) -> T:
    """Return a validator's value, or raise its failure as :class:`ValidationError`.

    Args:
        result: What a validator returned.

    Returns:
        The validated value.

    Raises:
        ValidationError: If ``result`` is a :class:`ValidationFailure`.
    """
    if isinstance(result, ValidationFailure):
        raise ValidationError(result)
    return result
