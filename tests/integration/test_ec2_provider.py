"""The EC2 provider against moto's EC2 simulator in server mode (a real HTTP endpoint on loopback): the
provider contract, unchanged, then failure paths: bad AMI, missing subnet, throttling and quota answers
injected by a proxy, and the endpoint going away (the breaker opens, then closes).

Skipped, saying why, without boto3 or ``moto[server]``. Guests are never contacted (``ready_check_port: 0``):
moto's private addresses are not on this machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.ec2 import CREDENTIALS, REGION, FaultProxy, MotoServer, moto_or_skip, start_moto

moto_or_skip()

import boto3  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

import events as ev  # noqa: E402
from commands.backoff import CloneBackoff  # noqa: E402
from commands.handlers import Handlers  # noqa: E402
from commands.pool import Meta, PoolCommands  # noqa: E402
from commands.provider import PoolTarget, ProviderError  # noqa: E402
from events import Keys, decode_entry  # noqa: E402
from events.streams import xrange  # noqa: E402
from providers.ec2 import Ec2Provider  # noqa: E402
from providers.resilience import BreakerState  # noqa: E402
from tests.contract.provider_contract import ProviderContract  # noqa: E402


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with start_moto() as server:
        yield server


def client(url: str) -> Any:
    return boto3.client("ec2", endpoint_url=url, region_name=REGION, **CREDENTIALS)


@pytest.fixture(scope="module")
def ami(moto: MotoServer) -> str:
    return str(client(moto.url).describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def options(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "region": REGION,
        "endpoint_url": url,
        **CREDENTIALS,
        "instance_type": "t3.micro",
        "ready_check_port": 0,
        "wait_poll": 0.05,
        "throttle_base": 0.01,
        **extra,
    }


@pytest.fixture
async def make(moto: MotoServer, prefix: str) -> AsyncIterator[Any]:
    made: list[Ec2Provider] = []

    def build(url: str = "", **extra: Any) -> Ec2Provider:
        provider = Ec2Provider(
            "ec2", options(url or moto.url, **extra), key_prefix=prefix, executor_workers=4
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


class TestEc2ProviderContract(ProviderContract):
    ready_timeout = 10.0

    @pytest.fixture
    async def provider(self, make: Any) -> Ec2Provider:
        built: Ec2Provider = make()
        return built

    @pytest.fixture
    def pool(self, ami: str) -> PoolTarget:
        return PoolTarget(name="contract-pool", template=ami)


def test_credentials_never_show() -> None:
    provider = Ec2Provider("ec2", options("http://127.0.0.1:9", aws_secret_access_key="s3cr3t-K3y"))
    shown = f"{provider!r} {provider.options!r} {provider.options.credentials!r}"
    assert "s3cr3t-K3y" not in shown
    assert provider.options.credentials.session_kwargs()["aws_secret_access_key"] == "s3cr3t-K3y"


async def test_instances_carry_the_cost_tags(make: Any, ami: str, moto: MotoServer, prefix: str) -> None:
    provider: Ec2Provider = make(tags={"team": "ci"}, volume_size=12)
    pool = PoolTarget(name="tagged", template=ami, options={"tags": {"cost-center": "42"}})
    await provider.create_vm(pool, "vm-tags")
    await provider.tag_vm(pool, "vm-tags", {"token-user": "alice"})
    (reservation,) = client(moto.url).describe_instances(
        Filters=[
            {"Name": "tag:vm_name", "Values": ["vm-tags"]},
            {"Name": "tag:vmpooler_prefix", "Values": [prefix]},
        ]
    )["Reservations"]
    instance = reservation["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {
        "Name": "vm-tags",
        "vm_name": "vm-tags",
        "pool": "tagged",
        "vmpooler_prefix": prefix,
        "team": "ci",
        "cost-center": "42",
        "token-user": "alice",
    }
    volumes = client(moto.url).describe_volumes(
        VolumeIds=[m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    )["Volumes"]
    assert [v["Size"] for v in volumes] == [12]
    assert await provider.instance_counts() == {"tagged": 1}


async def test_inventory_finds_instances_made_and_deleted_by_hand(
    make: Any, ami: str, moto: MotoServer, prefix: str, redis: aioredis.Redis
) -> None:
    provider: Ec2Provider = make()
    pool = PoolTarget(name="byhand", template=ami)
    ec2 = client(moto.url)
    tags = [{"Key": "vm_name", "Value": "handmade"}, {"Key": "pool", "Value": "byhand"}]
    tags.append({"Key": "vmpooler_prefix", "Value": prefix})
    ec2.run_instances(
        ImageId=ami, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
    )
    await provider.create_vm(pool, "ours")
    assert await provider.list_vms(pool) == ["handmade", "ours"]
    found = await provider.get_vm(pool, "ours")
    assert found is not None
    ec2.terminate_instances(InstanceIds=[_instance_id(ec2, prefix, "ours")])
    assert await provider.list_vms(pool) == ["handmade"]
    assert await provider.get_vm(pool, "ours") is None

    keys = Keys(prefix)
    cmds = PoolCommands(redis, keys)
    await cmds.configure(
        "byhand", ev.PoolConfigured(size=0, template=ami, clone_limit=1, ready_ttl=0, timeout=15), Meta("t")
    )
    assert await cmds.reconcile("byhand", await provider.list_vms(pool), cmds.clock(), Meta("t")) == (0, 1)


def _instance_id(ec2: Any, prefix: str, vm: str) -> str:
    filters = [{"Name": "tag:vm_name", "Values": [vm]}, {"Name": "tag:vmpooler_prefix", "Values": [prefix]}]
    return str(ec2.describe_instances(Filters=filters)["Reservations"][0]["Instances"][0]["InstanceId"])


async def test_an_unknown_ami_fails_the_clone_permanently(make: Any) -> None:
    provider: Ec2Provider = make()
    with pytest.raises(ProviderError, match=r"InvalidAMIID\.NotFound") as caught:
        await provider.create_vm(PoolTarget(name="badami", template="ami-0000000000deadbee"), "vm1")
    assert caught.value.permanent
    assert provider.breaker is not None
    assert provider.breaker.state is BreakerState.CLOSED


async def test_a_missing_subnet_fails_the_clone_permanently(make: Any, ami: str) -> None:
    provider: Ec2Provider = make()
    pool = PoolTarget(name="nosubnet", template=ami, options={"subnet_id": "subnet-0123456789abcdef0"})
    with pytest.raises(ProviderError, match=r"EC2 us-east-1 .*InvalidSubnetID\.NotFound") as caught:
        await provider.create_vm(pool, "vm1")
    assert caught.value.permanent


async def test_throttling_is_retried_with_back_off(make: Any, ami: str, moto: MotoServer) -> None:
    with FaultProxy(moto.port) as proxy:
        provider: Ec2Provider = make(proxy.url, throttle_retries=3)
        pool = PoolTarget(name="throttled", template=ami)
        proxy.inject("RunInstances", "RequestLimitExceeded", 2, status=503)
        assert (await provider.create_vm(pool, "vm1")).name == "vm1"
        assert proxy.requests["RunInstances"] == 3
        assert provider.api.throttled == 2

        proxy.inject("DescribeInstances", "RequestLimitExceeded", 10, status=503)
        with pytest.raises(ProviderError, match="throttled") as caught:
            await provider.get_vm(pool, "vm1")
        assert not caught.value.permanent
        assert caught.value.retry_in > 0
        assert provider.breaker is not None
        assert provider.breaker.failures == 0  # EC2 answered: throttling opens no circuit


async def test_a_quota_error_pauses_cloning_and_the_pools_back_off(
    make: Any, ami: str, moto: MotoServer, redis: aioredis.Redis, prefix: str
) -> None:
    with FaultProxy(moto.port) as proxy:
        provider: Ec2Provider = make(proxy.url, quota_pause=120)
        proxy.inject("RunInstances", "InstanceLimitExceeded", 1)
        keys = Keys(prefix)
        cmds = PoolCommands(redis, keys)
        settings = ev.PoolConfigured(size=1, template=ami, clone_limit=1, ready_ttl=0, timeout=15)
        await cmds.configure("quota", settings, Meta("t"))
        (request,) = [
            decode_entry("quota", p, f)
            for p, f in await xrange(redis, keys.stream("quota"))
            if f[b"type"] == b"vm.clone-requested"
        ]
        now = [1_700_000_000_000]
        backoff = CloneBackoff(redis, keys, clock=lambda: now[0])
        target = PoolTarget(name="quota", template=ami)
        handlers = Handlers(cmds, lambda pool: (provider, target), worker="w", backoff=backoff)
        await handlers.handle(request)
        (failed,) = [
            decode_entry("quota", p, f).event
            for p, f in await xrange(redis, keys.stream("quota"))
            if f[b"type"] == b"vm.clone-failed"
        ]
        assert isinstance(failed, ev.VmCloneFailed)
        assert "InstanceLimitExceeded" in failed.error
        assert not failed.permanent
        now[0] += 119_000
        assert not (await backoff.admit("quota")).go  # the pool waits out the quota pause, not 1 s
        calls = proxy.requests["RunInstances"]
        with pytest.raises(ProviderError, match="cloning paused") as caught:
            await provider.create_vm(PoolTarget(name="other", template=ami), "vm2")
        assert caught.value.retry_in > 100
        assert proxy.requests["RunInstances"] == calls  # the provider did not ask EC2 again


async def test_the_endpoint_going_away_opens_then_closes_the_circuit(make: Any, ami: str) -> None:
    with start_moto() as first:
        provider: Ec2Provider = make(
            first.url,
            circuit_breaker_failure_threshold=3,
            circuit_breaker_timeout=0.5,
            circuit_breaker_half_open_attempts=2,
            connection_pool_timeout_initial=5,
        )
        pool = PoolTarget(name="away", template=ami)
        assert await provider.list_vms(pool) == []
        port = first.port
    assert provider.breaker is not None
    for _ in range(3):
        with pytest.raises(ProviderError, match="cannot reach the endpoint") as caught:
            await provider.list_vms(pool)
        assert not caught.value.permanent
    assert provider.breaker.state is BreakerState.OPEN
    started = time.monotonic()
    with pytest.raises(ProviderError, match="circuit breaker 'ec2' is open") as caught:
        await provider.list_vms(pool)
    assert time.monotonic() - started < 0.25
    assert 0 < caught.value.retry_in <= 0.5

    with start_moto(port):  # the endpoint is back (empty: a new simulator)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        # refused at once until the breaker timeout passed, then the half-open trial succeeds
        while (outcome := await _listing(provider, pool)) != "[]":
            assert "is open" in outcome
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert provider.breaker.state is BreakerState.HALF_OPEN
        assert await provider.list_vms(pool) == []
        assert provider.breaker.state is BreakerState.CLOSED


async def _listing(provider: Ec2Provider, pool: PoolTarget) -> str:
    try:
        return str(await provider.list_vms(pool))
    except ProviderError as exc:
        return str(exc)


async def test_a_service_fills_an_ec2_pool(moto: MotoServer, ami: str, redis_url: str, prefix: str) -> None:
    from vmpooler.config import parse_settings
    from vmpooler.redis_client import RedisHandle
    from vmpooler.wiring import Service

    settings = parse_settings(
        {
            "providers": {"aws": {"provider_class": "ec2", **options(moto.url)}},
            "pools": [{"name": "cloud", "template": ami, "size": 2, "provider": "aws"}],
            "redis": {"url": redis_url, "prefix": prefix},
        }
    )
    client_ = aioredis.Redis.from_url(redis_url)
    service = Service(settings, RedisHandle(client_, redis_url))
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(service.manager().run(stop)),
        asyncio.create_task(service.worker().run(stop, block_ms=50)),
    ]
    try:
        deadline = time.monotonic() + 30
        while await client_.zcard(service.keys.in_state("cloud", "ready")) < 2:
            assert time.monotonic() < deadline, "the EC2 pool did not fill"
            await asyncio.sleep(0.05)
        ready = [m.decode() for m in await client_.zrange(service.keys.in_state("cloud", "ready"), 0, -1)]
        provider = service.providers["aws"]
        assert sorted(ready) == await provider.list_vms(PoolTarget(name="cloud", template=ami))
        assert await client_.hget(f"{prefix}:ec2:aws:instances", "cloud") == b"2"  # for the dashboard
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        await service.close()
