"""The HTTP API: vmpooler v3 over Litestar. No global state: everything comes in through ``ApiDeps``."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.openapi import OpenAPIConfig

from web._deps import ApiDeps, Services
from web.auth import AuthUnavailable, auth_unavailable_response
from web.dashboard import dashboard_routes
from web.errors import EXCEPTION_HANDLERS
from web.prometheus import prometheus_parts
from web.ratelimit import rate_limiting
from web.request_log import request_logging
from web.routes_config import config_routes
from web.routes_ondemand import ondemand_routes
from web.routes_status import status_routes
from web.routes_summary import summary_routes
from web.routes_tasks import task_routes
from web.routes_tokens import token_routes
from web.routes_vm import vm_routes

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
    prometheus = prometheus_parts(deps)
    return Litestar(
        route_handlers=[
            *vm_routes(services),
            *status_routes(services),
            *task_routes(services),
            *summary_routes(services),
            *config_routes(services),
            *token_routes(services),
            *ondemand_routes(services),
            *dashboard_routes(services),
            *prometheus.routes,
        ],
        exception_handlers={**EXCEPTION_HANDLERS, AuthUnavailable: auth_unavailable_response},
        # Prometheus outermost, so requests refused by the rate limiter are counted too.
        middleware=[
            *prometheus.middleware,
            *request_logging(deps.settings),
            *rate_limiting(deps.settings, deps.redis, deps.keys.prefix, deps.clock),
        ],
        after_exception=prometheus.after_exception,
        # vmpooler always mounts Rack::Deflater.
        compression_config=CompressionConfig(backend="gzip", minimum_size=500),
        openapi_config=OpenAPIConfig(
            title="vmpooler",
            version="3",
            description="Pools of ready VMs for CI; API-compatible with vmpooler's API v3.",
        ),
        request_max_body_size=_MAX_BODY,
        # Logging is the process's business (the composition root), not the app's: no global changes.
        logging_config=None,
        debug=False,
    )
