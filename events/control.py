"""Events of the control stream (``{ctl}``): cross-pool things such as API tokens."""

from __future__ import annotations

from ._base import Event

__all__ = ["ControlChangeRefused", "ControlEvent", "TokenCreated", "TokenRevoked"]


class TokenCreated(Event, frozen=True, tag="token.created"):
    """A user created an API token. Only its SHA-256 is ever stored, here and in Redis."""

    token_hash: str
    user: str


class TokenRevoked(Event, frozen=True, tag="token.revoked"):
    token_hash: str
    user: str = ""


class ControlChangeRefused(Event, frozen=True, tag="control.refused"):
    """A client's change of an on-demand request (its cancellation) was refused (401/403).
    Changes no state; the API records at most one per requester, request and minute.

    Attributes:
        request_id: the request the client tried to change.
        action: what was tried (``cancel``).
        status: the HTTP status the client got.
        user: the requester's user; empty when no valid token was sent.
        client: the peer address the request came from.
        reason: why it was refused.
    """

    request_id: str
    action: str
    status: int
    user: str = ""
    client: str = ""
    reason: str = ""


ControlEvent = TokenCreated | TokenRevoked | ControlChangeRefused
