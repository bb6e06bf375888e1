"""Metrics reach real statsd (UDP) and Graphite (TCP) listeners with vmpooler's names, from the log
(the metrics projection), from the API (outcomes that are not events) and from the sampler."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

import events as ev
from commands.pool import Meta
from commands.telemetry import StreamProbe, TelemetrySampler
from commands.worker import GROUP
from projectors import ReadModels
from projectors.metrics import start_at_end
from tests.integration._api import make_settings
from tests.integration._metrics_env import TcpListener, UdpListener, metrics_env, metrics_runner, until
from vmpooler.metrics import GraphiteMetrics, StatsdMetrics, build_metrics

POOLS = [{"name": "pool1", "size": 2, "alias": ["one"]}, {"name": "pool2", "size": 1}]
# The API refuses "=" in tag values (as vmpooler does), so a matrix label cannot come through a PUT:
# the component is "none" here (see tests/unit/test_metric_names.py for the label form).
JENKINS = "https://jenkins.example.net/job/platform_puppet-agent_integration-suite_main/42/"


async def test_statsd_receives_vmpooler_names_from_the_log_and_the_api(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with UdpListener.running() as udp:
        settings = make_settings(POOLS, statsd={"server": "127.0.0.1", "port": udp.port, "prefix": "vmp"})
        metrics = build_metrics(settings)
        assert isinstance(metrics, StatsdMetrics)
        async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
            runner = metrics_runner(redis, api.keys, settings, metrics)
            [vm] = await api.seed("pool1", 1, size=1, clone_seconds=[12.5], boot_seconds=[30.0])
            assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200
            assert (await api.client.post("/api/v3/vm/one")).status_code == 503  # pool1 is empty now
            assert (await api.client.post("/api/v3/vm/nosuchpool")).status_code == 404
            assert (await api.client.post("/api/v3/vm", content=b"{not json")).status_code == 400
            assert (await api.client.get(f"/api/v3/vm/{vm}")).status_code == 200
            assert (await api.client.post(f"/api/v3/vm/{vm}/disk/8")).status_code == 202
            assert (await api.client.post(f"/api/v3/vm/{vm}/snapshot")).status_code == 202
            assert (await api.client.delete(f"/api/v3/vm/{vm}")).status_code == 200
            assert (await api.client.delete(f"/api/v3/vm/{vm}")).status_code == 404
            await api.project()
            await runner.catch_up()
            expected = {
                "vmp.vmpooler_clone.pool1:12.5|g",  # statsd formats gauges with %s, timings with %0.6f
                "vmp.time_to_ready_state.pool1:30000.000000|ms",
                "vmp.checkout.success.pool1:1|c",
                "vmp.delete.success:1|c",
                "vmp.checkout.empty.one:1|c",
                "vmp.checkout.invalid.nosuchpool:1|c",
                "vmp.checkout.invalid.unknown:1|c",
                "vmp.delete.failed:1|c",
                "vmp.http_requests_vm_total.get.vm.template:1|c",
                "vmp.http_requests_vm_total.post.vm.checkout:1|c",
                "vmp.http_requests_vm_total.get.vm.hostname:1|c",
                "vmp.http_requests_vm_total.delete.vm.hostname:1|c",
                "vmp.http_requests_vm_total.post.vm.disksize:1|c",
                "vmp.http_requests_vm_total.post.vm.snapshot:1|c",
            }
            await until(lambda: expected <= set(udp.lines), f"statsd lines {expected - set(udp.lines)}")
            # usage_stats is off: no per-user names
            assert not [line for line in udp.lines if line.startswith("vmp.user.")]
            # a second runner (a restart) resumes from the checkpoint: nothing is emitted twice
            before = len(udp.lines)
            assert await metrics_runner(redis, api.keys, settings, metrics).catch_up() == 0
            assert udp.lines.count("vmp.checkout.success.pool1:1|c") == 1
            assert len(udp.lines) == before
        metrics.close()


async def test_usage_stats_name_the_user_and_the_jenkins_job(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with UdpListener.running() as udp:
        settings = make_settings(
            POOLS, statsd={"server": "127.0.0.1", "port": udp.port}, config={"usage_stats": True}
        )
        metrics = build_metrics(settings)
        async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
            runner = metrics_runner(redis, api.keys, settings, metrics)
            [vm, other] = await api.seed("pool1", 2)
            assert (await api.client.post("/api/v3/vm/pool1+pool1")).status_code == 200
            tags = b'{"tags": {"jenkins_build_url": "' + JENKINS.encode() + b'"}}'
            assert (await api.client.put(f"/api/v3/vm/{vm}", content=tags)).status_code == 200
            litmus = b'{"tags": {"jenkins_build_url": "https://ci.example/job/litmus_x/1"}}'
            assert (await api.client.put(f"/api/v3/vm/{other}", content=litmus)).status_code == 200
            for name in (vm, other):
                assert (await api.client.delete(f"/api/v3/vm/{name}")).status_code == 200
            await api.project()
            await runner.catch_up()
            expected = {
                "vmpooler.user.unauthenticated.allocate.pool1:1|c",
                "vmpooler.user.unauthenticated.destroy.pool1:1|c",
                "vmpooler.usage_jenkins_instance.jenkins_example_net.platform.destroy.pool1:1|c",
                "vmpooler.usage_branch_project.main.puppet-agent.destroy.pool1:1|c",
                "vmpooler.usage_job_component.integration-suite.none.destroy.pool1:1|c",
                "vmpooler.usage_litmus.unauthenticated.destroy.pool1:1|c",
            }
            await until(lambda: expected <= set(udp.lines), f"usage lines {expected - set(udp.lines)}")
            assert udp.lines.count("vmpooler.user.unauthenticated.allocate.pool1:1|c") == 2
        metrics.close()


async def test_sampler_gauges_pool_counts_lag_dead_letters_and_workers(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with UdpListener.running() as udp:
        settings = make_settings(POOLS, statsd={"server": "127.0.0.1", "port": udp.port, "prefix": "s"})
        metrics = build_metrics(settings)
        async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
            [vm, _] = await api.seed("pool1", 2, size=3)  # 2 ready, 1 cloning
            stream = api.keys.stream("pool1")
            await api.redis.xgroup_create(stream, GROUP, id="0")
            await api.redis.xreadgroup(GROUP, "worker-a", {stream: ">"}, count=2)
            await api.redis.xadd(api.keys.dead_letters("pool1"), {"type": "vm.cloned"})
            await api.redis.set(api.keys.lease("pool1", "manager"), "manager-a")
            length = int(await api.redis.xlen(stream))
            reads = ReadModels(redis, api.keys)

            async def counts(pools: list[str]) -> dict[str, dict[str, int]]:
                return {pool: view.counts for pool, view in (await reads.pool_status(pools)).items()}

            sampler = TelemetrySampler(StreamProbe(redis, api.keys), metrics, ["pool1", "pool2"], counts)
            await sampler.sample()
            await api.commands.append("pool1", [(vm, ev.VmTagged(tags={"a": "b"}))], Meta("t", "t"))
            await sampler.sample()
            expected = {
                "s.ready.pool1:2|g",
                "s.running.pool1:0|g",
                f"s.stream_length.pool1:{length}|g",
                f"s.consumer_lag.workers.pool1:{length}|g",  # 2 pending + the rest never delivered
                "s.consumer_lag.proj_status.pool1:0|g",
                "s.vmpooler_dlq.pool1.count:1|g",
                "s.lease_holders.manager:1|g",
                "s.live_workers:1|g",
            }
            await until(lambda: expected <= set(udp.lines), f"sampler lines {expected - set(udp.lines)}")
            assert any(line.startswith("s.event_rate.pool1:") for line in udp.lines)
        metrics.close()


async def test_graphite_lines_over_one_connection_and_reconnects() -> None:
    async with TcpListener.running() as tcp:
        settings = make_settings(POOLS, graphite={"server": "127.0.0.1", "port": tcp.port, "prefix": "g"})
        metrics = build_metrics(settings)
        assert isinstance(metrics, GraphiteMetrics)
        metrics._retry_s = 0.0  # reconnect at once in this test
        metrics.increment("checkout.success.pool1")
        metrics.gauge("ready.pool1", 3)
        metrics.timing("time_to_ready_state.pool1", 1500)
        await until(lambda: len(tcp.lines) >= 3, "three graphite lines")
        names = [line.split(" ") for line in tcp.lines[:3]]
        assert [(n, v) for n, v, _ in names] == [
            ("g.checkout.success.pool1", "1"),
            ("g.ready.pool1", "3"),
            ("g.time_to_ready_state.pool1", "1500"),
        ]
        assert all(abs(int(ts) - time.time()) < 60 for _, _, ts in names)
        assert len(tcp.writers) == 1  # one persistent connection
        tcp.writers[0].close()  # the server drops us: lines are dropped until we reconnect

        def reconnected() -> bool:
            metrics.gauge("running.pool1", 7)
            return len(tcp.writers) == 2 and "g.running.pool1" in {
                line.split(" ")[0] for line in tcp.lines[3:]
            }

        await until(reconnected, "graphite to reconnect")
        metrics.close()


async def test_graphite_never_blocks_when_carbon_is_down() -> None:
    async with TcpListener.running() as tcp:
        port = tcp.port
    settings = make_settings(POOLS, graphite={"server": "127.0.0.1", "port": port})
    metrics = build_metrics(settings)
    assert isinstance(metrics, GraphiteMetrics)
    started = time.monotonic()
    for i in range(20_000):
        metrics.increment(f"checkout.success.pool{i % 3}")
    assert time.monotonic() - started < 2.0
    await until(lambda: metrics.dropped >= 10_000, "lines to be dropped")
    metrics.close()


async def test_invalid_configuration_changes_are_counted(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with UdpListener.running() as udp:
        settings = make_settings(
            POOLS, statsd={"server": "127.0.0.1", "port": udp.port}, config={"experimental_features": True}
        )
        metrics = build_metrics(settings)
        async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
            bad_size = await api.client.post(
                "/api/v3/config/poolsize", content=b'{"pool1": "x", "nope": "1"}'
            )
            assert bad_size.status_code == 400
            assert (await api.client.post("/api/v3/config/pooltemplate", content=b"{")).status_code == 400
            assert (await api.client.post("/api/v3/poolreset", content=b'{"gone": "1"}')).status_code == 400
            assert (await api.client.post("/api/v3/poolreset", content=b"[")).status_code == 400
            expected = {
                "vmpooler.config.invalid.pool1:1|c",
                "vmpooler.config.invalid.nope:1|c",
                "vmpooler.config.invalid.unknown:1|c",
                "vmpooler.poolreset.invalid.gone:1|c",
                "vmpooler.poolreset.invalid.unknown:1|c",
            }
            await until(lambda: expected <= set(udp.lines), f"config lines {expected - set(udp.lines)}")
        metrics.close()


async def test_ondemand_requests_are_counted(redis: aioredis.Redis, redis_url: str, prefix: str) -> None:
    async with UdpListener.running() as udp:
        settings = make_settings(POOLS, statsd={"server": "127.0.0.1", "port": udp.port})
        metrics = build_metrics(settings)
        async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
            c = api.client
            made = await c.post("/api/v3/ondemandvm", content=b'{"pool1": "1", "request_id": "r1"}')
            assert made.status_code == 201
            assert (
                await c.post("/api/v3/ondemandvm", content=b'{"pool1": "1", "request_id": "r1"}')
            ).status_code == 409
            assert (await c.post("/api/v3/ondemandvm", content=b'{"nosuch": "1"}')).status_code == 404
            assert (await c.post("/api/v3/ondemandvm", content=b'{"one": "11"}')).status_code == 403
            assert (await c.post("/api/v3/ondemandvm/pool2")).status_code == 201
            assert (await c.delete("/api/v3/ondemandvm/r1")).status_code == 200
            await c.get("/api/v3/ondemandvm/r1")
            expected = {
                "vmpooler.ondemandrequest_generate.success:1|c",
                "vmpooler.ondemandrequest_generate.duplicaterequests:1|c",
                "vmpooler.ondemandrequest_fail.invalid.nosuch:1|c",
                "vmpooler.ondemandrequest_fail.toomanyrequests.one:1|c",
                "vmpooler.http_requests_vm_total.post.ondemand.requestid:1|c",
                "vmpooler.http_requests_vm_total.delete.ondemand.template:1|c",
                "vmpooler.http_requests_vm_total.delete.ondemand.request:1|c",
                "vmpooler.http_requests_vm_total.get.ondemand.request:1|c",
            }
            await until(lambda: expected <= set(udp.lines), f"on-demand lines {expected - set(udp.lines)}")
        metrics.close()


async def test_checkout_empty_names_the_request_that_could_not_be_served(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with UdpListener.running() as udp:
        settings = make_settings(POOLS, statsd={"server": "127.0.0.1", "port": udp.port})
        metrics = build_metrics(settings)
        async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
            await api.seed("pool1", 2)
            await api.seed("pool2", 0)
            assert (await api.client.post("/api/v3/vm/one+pool2")).status_code == 503
            await until(lambda: "vmpooler.checkout.empty.pool2:1|c" in udp.lines, "checkout.empty.pool2")
            assert not [line for line in udp.lines if line.startswith("vmpooler.checkout.empty.one")]
        metrics.close()


async def test_a_first_start_skips_the_history_and_a_rebuild_emits_nothing(
    redis: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    async with UdpListener.running() as udp:
        settings = make_settings(POOLS, statsd={"server": "127.0.0.1", "port": udp.port})
        metrics = build_metrics(settings)
        async with metrics_env(redis, redis_url, prefix, settings, metrics) as api:
            await api.seed("pool1", 2)
            assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200
            await start_at_end(redis, api.keys, list(settings.pool_names))
            runner = metrics_runner(redis, api.keys, settings, metrics)
            assert await runner.catch_up() == 0  # the history is not emitted
            await api.runner.rebuild()  # read models rebuilt from the log: no metrics
            assert (await api.client.post("/api/v3/vm/pool1")).status_code == 200
            assert await runner.catch_up() >= 1  # the checkout (and the refill it triggers)
            await until(lambda: "vmpooler.checkout.success.pool1:1|c" in udp.lines, "the new checkout")
            assert udp.lines.count("vmpooler.checkout.success.pool1:1|c") == 1
            assert not [line for line in udp.lines if "vmpooler_clone" in line or "time_to_ready" in line]
        metrics.close()
