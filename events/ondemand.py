"""On-demand requests: the request's lifecycle on the control stream and its per-pool slices in
the pool streams (their pure fold is ``events.od_fold``, mirrored live by ``od_lib.lua``).

A request (``ondemand.*``, control stream ``{ctl}``) names slices: ``count`` VMs of one pool asked
for under one requested name. The manager opens each slice in its pool's stream
(``pool.ondemand-requested``); the pool's decision scripts clone for it, hand its VMs to it when
they boot (``vm.ready`` then ``vm.checked-out`` with the request id, in one step) and close it
(``pool.ondemand-closed``) when the request is settled. Request status in the control slot:
``pending`` -> ``fulfilled`` | ``failed`` | ``cancelled`` (also from fulfilled or failed).
"""

from __future__ import annotations

from ._base import Event

__all__ = [
    "OndemandAccepted",
    "OndemandCancelled",
    "OndemandEvent",
    "OndemandFailed",
    "OndemandForgotten",
    "OndemandFulfilled",
    "OndemandReleased",
    "PoolOndemandClosed",
    "PoolOndemandRequested",
]


class OndemandAccepted(Event, frozen=True, tag="ondemand.accepted"):
    """The API accepted a request (``POST /ondemandvm``); the manager now provisions it.

    Attributes:
        request_id: the client's or a generated id (unique: a second accept is refused).
        slices: what to provision: requested name (pool or alias) -> pool chosen -> VM count.
        lifetime: hours the delivered VMs live (0 = never expire).
        token_user: the requester's user (owner of the VMs), empty without a token.
        token_hash: hash of the requester's token.
        ttl_ms: the request fails if not fulfilled this long after acceptance (0 = never).
        max_retries: clone retries allowed per slice after a transient failure.
    """

    request_id: str
    slices: dict[str, dict[str, int]]
    lifetime: int
    token_user: str = ""
    token_hash: str = ""
    ttl_ms: int = 0
    max_retries: int = 0


class OndemandFulfilled(Event, frozen=True, tag="ondemand.fulfilled"):
    request_id: str


class OndemandFailed(Event, frozen=True, tag="ondemand.failed"):
    """``reason``: ``ttl``, ``Configuration error: <msg>`` or ``Max retry attempts exceeded``."""

    request_id: str
    reason: str


class OndemandCancelled(Event, frozen=True, tag="ondemand.cancelled"):
    """The client deleted the request; its VMs (delivered or in flight) are to be destroyed."""

    request_id: str


class OndemandReleased(Event, frozen=True, tag="ondemand.released"):
    """The manager closed the request's slices in every pool for the request's ``status``.

    ``keep_ms``: how long the settled request is kept before it is forgotten (0: forever).
    """

    request_id: str
    status: str
    keep_ms: int = 0


class OndemandForgotten(Event, frozen=True, tag="ondemand.forgotten"):
    """A settled request's retention ran out: its record is dropped and its id may be used again
    (vmpooler's request hashes expire the same way)."""

    request_id: str


class PoolOndemandRequested(Event, frozen=True, tag="pool.ondemand-requested"):
    """A slice of a request opened in this pool (its VMs count against ``ondemand_clone_limit``)."""

    request_id: str
    requested_as: str
    count: int
    lifetime: int = 0
    token_user: str = ""
    token_hash: str = ""
    max_retries: int = 0


class PoolOndemandClosed(Event, frozen=True, tag="pool.ondemand-closed"):
    """The request's slices in this pool are closed; unless ``fulfilled``, its VMs are discarded."""

    request_id: str
    reason: str


OndemandEvent = (
    OndemandAccepted
    | OndemandFulfilled
    | OndemandFailed
    | OndemandCancelled
    | OndemandReleased
    | OndemandForgotten
    | PoolOndemandRequested
    | PoolOndemandClosed
)
