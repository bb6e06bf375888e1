"""Projectors: read models folded from the log, and the queries over them."""

from __future__ import annotations

from ._base import Projection
from ._tx import Tx
from .daily_stats import DailyStats
from .ondemand import OndemandStatus, OndemandView
from .pool_status import PoolStatus
from .read import ReadModels
from .runner import ProjectionRunner
from .token_index import TokenIndex
from .user_usage import UserUsage
from .views import PoolStatusView, VmView
from .vm_detail import VmDetail

__all__ = [
    "ALL_PROJECTIONS",
    "DailyStats",
    "OndemandStatus",
    "OndemandView",
    "PoolStatus",
    "PoolStatusView",
    "Projection",
    "ProjectionRunner",
    "ReadModels",
    "TokenIndex",
    "Tx",
    "UserUsage",
    "VmDetail",
    "VmView",
]


def ALL_PROJECTIONS() -> list[Projection]:
    """A fresh instance of every projection."""
    return [VmDetail(), PoolStatus(), TokenIndex(), DailyStats()]
