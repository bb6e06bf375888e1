"""The HTTP API: vmpooler v3 over Litestar. No global state: everything comes in through ``ApiDeps``.

Handlers are module-level functions; what they need is in the app's state (``services``, ``dashboard``).
"""

from __future__ import annotations

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from web._deps import ApiDeps, Services
from web.auth import AuthUnavailable, auth_unavailable_response
from web.dashboard import DASHBOARD_ROUTES, Dashboard
from web.errors import EXCEPTION_HANDLERS
from web.prometheus import prometheus_parts
from web.ratelimit import rate_limiting
from web.request_log import request_logging
from web.routes_config import CONFIG_ROUTES
from web.routes_ondemand import ONDEMAND_ROUTES
from web.routes_status import STATUS_ROUTES
from web.routes_summary import SUMMARY_ROUTES
from web.routes_tasks import TASK_ROUTES
from web.routes_tokens import TOKEN_ROUTES
from web.routes_vm import VM_ROUTES

__all__ = ["ApiDeps", "create_app"]

# Bodies we read are capped at web.validation.MAX_BODY_BYTES by web._json.read_body; this is only
# Litestar's own backstop for any other way of reading a body.
_MAX_BODY = 64 * 1024


def create_app(deps: ApiDeps) -> Litestar:
    """Build the API application; everything per-process (services, compiled filters) is made here once.

    Args:
        deps: what the API depends on, built by the composition root.

    Returns:
        The Litestar application (an ASGI app); its OpenAPI document is at ``/schema/openapi.json``.
    """
    services = Services.build(deps)
    dashboard = Dashboard.build(services)
    prometheus = prometheus_parts(deps)
    return Litestar(
        route_handlers=[
            *VM_ROUTES,
            *STATUS_ROUTES,
            *TASK_ROUTES,
            *SUMMARY_ROUTES,
            *CONFIG_ROUTES,
            *TOKEN_ROUTES,
            *ONDEMAND_ROUTES,
            *DASHBOARD_ROUTES,
            *prometheus.routes,
        ],
        # what the handlers need, once per app (web._deps.services_of, web.dashboard.dashboard_of)
        state=State({"services": services, "dashboard": dashboard}),
        exception_handlers={**EXCEPTION_HANDLERS, AuthUnavailable: auth_unavailable_response},
        # Prometheus outermost, so requests refused by the rate limiter are counted too.
        middleware=[
            *prometheus.middleware,
            *request_logging(deps.settings),
            *rate_limiting(deps.settings, deps.redis, deps.keys.prefix, deps.clock),
        ],
        after_exception=prometheus.after_exception,
        before_send=prometheus.before_send,
        # vmpooler always mounts Rack::Deflater.
        compression_config=CompressionConfig(backend="gzip", minimum_size=500),
        openapi_config=OpenAPIConfig(
            title="vmpooler",
            version="3",
            description="Pools of ready VMs for CI; API-compatible with vmpooler's API v3.",
        ),
        request_max_body_size=_MAX_BODY,
        on_shutdown=[dashboard.close],
        # Logging is the process's business (the composition root), not the app's: no global changes.
        logging_config=None,
        debug=False,
    )
