"""Events of the control stream (``{ctl}``): cross-pool things such as API tokens."""

from __future__ import annotations

from ._base import Event
from ._refused import Refusal

__all__ = ["ControlChangeRefused", "ControlEvent", "TokenCreated", "TokenRevoked"]


class TokenCreated(Event, frozen=True, tag="token.created"):
    """A user created an API token. Only its SHA-256 is ever stored, here and in Redis."""

    token_hash: str
    user: str


class TokenRevoked(Event, frozen=True, tag="token.revoked"):
    token_hash: str
    user: str = ""


class ControlChangeRefused(Refusal, frozen=True, kw_only=True, tag="control.refused"):
    """A client's change of an on-demand request (its cancellation) was refused."""

    request_id: str


ControlEvent = TokenCreated | TokenRevoked | ControlChangeRefused
