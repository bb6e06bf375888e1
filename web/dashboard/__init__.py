"""The dashboard: a static page from this package, its JSON reads, live updates by SSE, and
vmpooler's ``/dashboard/stats/vmpooler/{pool,running}`` answered from our own history series."""

from __future__ import annotations

from ._routes import DASHBOARD_ROUTES, Dashboard

__all__ = ["DASHBOARD_ROUTES", "Dashboard"]
