"""Per-user caps (``:auth: max_running_per_user``, ``max_ondemand_requests_per_user``; off by default).

Counted from the ``usage`` projection (``projectors.user_usage``), which follows the log within
milliseconds: requests of one user that arrive at the same moment may together pass a cap by what
they ask for, and a VM given back a moment ago may still count. Requests without a token are not
capped (rate limits still apply). Over a cap: 403 with a message.
"""

from __future__ import annotations

from commands.checkout import Requester
from events import CONTROL
from projectors import UserUsage
from web._deps import Services
from web.errors import Forbidden

__all__ = ["check_caps"]


async def check_caps(s: Services, requester: Requester, *, vms: int, ondemand: bool = False) -> None:
    """Refuse a request for ``vms`` more VMs (an on-demand request when ``ondemand``) that would take
    ``requester`` over a cap.

    Raises:
        Forbidden: the user holds too many running VMs, or pending on-demand requests.
    """
    auth = s.settings.auth
    if auth is None or not requester.user:
        return
    most_vms, most_requests = auth.max_running_per_user, auth.max_ondemand_requests_per_user
    if not most_vms and not (ondemand and most_requests):
        return
    running, pending = await _usage(s, requester.user)
    if most_vms and running + vms > most_vms:
        raise Forbidden(
            f"user {requester.user} would hold {running + vms} running VMs; the limit is {most_vms}"
        )
    if ondemand and most_requests and pending >= most_requests:
        raise Forbidden(
            f"user {requester.user} has {pending} pending on-demand requests; the limit is {most_requests}"
        )


async def _usage(s: Services, user: str) -> tuple[int, int]:
    """The user's running VMs over every pool, and pending on-demand requests (one round trip)."""
    keys = s.deps.keys
    async with s.deps.redis.pipeline(transaction=False) as pipe:
        for pool in s.pool_names:
            pipe.scard(f"{keys.read_model(pool, UserUsage.name)}:vms:{user}")
        pipe.scard(f"{keys.read_model(CONTROL, UserUsage.name)}:od:{user}")
        counts = [int(n) for n in await pipe.execute()]
    return sum(counts[:-1]), counts[-1]
