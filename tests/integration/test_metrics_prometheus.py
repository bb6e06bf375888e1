"""The Prometheus endpoint: exposition text that parses, HTTP request/latency/exception families
with normalised paths, and vmpooler's families with ``vmpooler_instance`` (reference §1.5, §5.1)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from commands.settings import Settings
from tests.integration._api import make_settings
from tests.integration._metrics_env import metrics_env, metrics_runner
from vmpooler.metrics import PrometheusMetrics, build_metrics, prometheus_registry

POOLS = [{"name": "pool1", "size": 2}, {"name": "pool2", "size": 1}]
PROMETHEUS = {"prefix": "inst1", "prometheus_prefix": "vmp", "prometheus_endpoint": "/metrics-here"}


def samples(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> its samples (name, labels, value), from exposition text."""
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def value(found: dict[str, list[Any]], family: str, sample: str, **labels: str) -> float | None:
    for name, got, v in found.get(family, []):
        if name == sample and all(got.get(k) == want for k, want in labels.items()):
            return float(v)
    return None


def settings_with(**sections: Any) -> Settings:
    return make_settings(POOLS, prometheus=PROMETHEUS, **sections)


async def test_endpoint_serves_http_and_vmpooler_families(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    settings = settings_with()
    metrics = build_metrics(settings)
    assert isinstance(metrics, PrometheusMetrics)
    registry = prometheus_registry(metrics)
    async with metrics_env(redis, redis_url, prefix, settings, metrics, registry=registry) as api:
        runner = metrics_runner(redis, api.keys, settings, metrics)
        [vm] = await api.seed("pool1", 1, size=1, boot_seconds=[95.0])
        assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200
        assert (await api.client.get(f"/api/v3/vm/{vm}")).status_code == 200
        assert (await api.client.get("/api/v3/vm/nosuchvm")).status_code == 404
        assert (await api.client.post("/api/v3/vm/pool2")).status_code == 503
        await api.project()
        await runner.catch_up()
        response = await api.client.get("/metrics-here")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
    # HTTP middleware: hostnames collapsed into /vm, every sample labelled with the instance
    requests = "vmp_http_requests"
    assert value(found, requests, "vmp_http_requests_total", code="200", method="GET", path="/api/v3/vm") == 1
    assert value(found, requests, "vmp_http_requests_total", code="404", method="GET", path="/api/v3/vm") == 1
    assert (
        value(found, requests, "vmp_http_requests_total", code="503", method="POST", path="/api/v3/vm") == 1
    )
    assert not [s for s in found[requests] if "nosuchvm" in s[1]["path"] or vm in s[1]["path"]]
    assert {s[1]["vmpooler_instance"] for s in found[requests]} == {"inst1"}
    latency = "vmp_http_request_duration_seconds"
    assert value(found, latency, f"{latency}_count", method="GET", path="/api/v3/vm") == 2
    assert value(found, latency, f"{latency}_bucket", method="GET", path="/api/v3/vm", le="+Inf") == 2
    # vmpooler's families, from the log and from the API
    assert value(found, "vmp_checkout_success", "vmp_checkout_success_total", poolname="pool1") == 1
    assert value(found, "vmp_checkout_empty", "vmp_checkout_empty_total", poolname="pool2") == 1
    api_total = "vmp_http_requests_vm_total"
    ops = {"method": "get", "subpath": "vm"}
    assert value(found, "vmp_http_requests_vm", api_total, operation="template", **ops) == 2
    assert value(found, "vmp_http_requests_vm", api_total, operation="hostname", **ops) == 2
    ready = "vmp_time_to_ready_state"
    assert value(found, ready, f"{ready}_bucket", poolname="pool1", le="60.0") == 0
    assert value(found, ready, f"{ready}_bucket", poolname="pool1", le="120.0") == 1
    assert value(found, ready, f"{ready}_sum", poolname="pool1", vmpooler_instance="inst1") == 95.0
    assert value(found, "vmp_vmpooler_clone", "vmp_vmpooler_clone", poolname="pool1") == 10.0


async def test_unhandled_exceptions_are_counted_by_class(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    def broken_ids() -> str:
        raise RuntimeError("no ids today")

    settings = settings_with()
    metrics = build_metrics(settings)
    registry = prometheus_registry(metrics)
    async with metrics_env(
        redis, redis_url, prefix, settings, metrics, registry=registry, new_id=broken_ids
    ) as api:
        await api.seed("pool1", 1, size=1)
        assert (await api.client.post("/api/v3/vm/pool1")).status_code == 500
        found = samples((await api.client.get("/metrics-here")).text)
    exceptions = "vmp_http_exceptions"
    assert value(found, exceptions, "vmp_http_exceptions_total", exception="RuntimeError") == 1
    assert value(found, "vmp_http_requests", "vmp_http_requests_total", code="500", path="/api/v3/vm") == 1


async def test_first_configured_sink_wins_and_no_endpoint_otherwise(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    settings = settings_with(statsd={"server": "127.0.0.1", "port": 9})
    metrics = build_metrics(settings)
    assert not isinstance(metrics, PrometheusMetrics)
    async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
        assert (await api.client.get("/metrics-here")).status_code == 404


async def test_made_up_paths_add_no_series(redis: aioredis.Redis, redis_url: str, prefix: str) -> None:
    """Labels are route templates: 300 made-up paths under parameterised routes, and paths that match
    no route, add a handful of series, not hundreds."""
    settings = settings_with(auth={"provider": "dummy"}, config={"experimental_features": True})
    metrics = build_metrics(settings)
    registry = prometheus_registry(metrics)
    async with metrics_env(redis, redis_url, prefix, settings, metrics, registry=registry) as api:
        for i in range(60):
            for path in ("/dashboard/static/", "/api/v3/summary/", "/dashboard/vm/", "/no/such/route/"):
                await api.client.get(f"{path}made-up-{i}")
            await api.client.delete(f"/api/v3/config/poolsize/made-up-{i}")
            await api.client.request("BREW", f"/api/v3/vm/x{i}")
        found = samples((await api.client.get("/metrics-here")).text)
    paths = {labels["path"] for _, labels, _ in found["vmp_http_requests"]}
    assert paths <= {
        "/dashboard/static/{name}",
        "/api/v3/summary/{name}",
        "/dashboard/vm",
        "/api/v3/config/poolsize/{pool}",
        "/api/v3/vm",
        "<unmatched>",
    }
    assert "<unmatched>" in paths
    assert len(found["vmp_http_requests"]) < 20
    assert value(found, "vmp_http_requests", "vmp_http_requests_total", path="<unmatched>", code="404") == 60
