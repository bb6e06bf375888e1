from __future__ import annotations

from ._base import Event

__all__ = ["Refusal"]


class Refusal(Event, frozen=True, tag=False):
    """What every ``*.refused`` event records: a client's change was refused (401/403). It changes no
    state (no state-machine rule, so the decision scripts append it as is); the API records at most
    one per requester, target and minute.

    Attributes:
        action: what was tried (``return``, ``update``, ``disk``, ``snapshot``, ``revert``,
            ``cancel``, ``poolsize``, ``pooltemplate``, ``clonetarget``, ``poolreset`` ...).
        status: the HTTP status the client got.
        user: the requester's user; empty when no valid token was sent.
        client: the peer address the request came from.
        reason: why it was refused.
    """

    action: str
    status: int
    user: str = ""
    client: str = ""
    reason: str = ""
