"""The request sequences Beaker's vmpooler hypervisor sends (``provision``, tagging, ``cleanup``), with
what it reads from each answer. Beaker's ``pooling_api`` is the API base (``…/api/v3``); it posts the
whole host set to ``<base>/vm/`` (trailing slash), tags each host with a PUT that carries no token
(its roles joined by ", "; refused for a host it checked out with a token), and deletes each host by
its FQDN. Its disk request goes to
``<base>/api/v1/vm/…``, which vmpooler 3 does not serve either, so it is not covered."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.integration._api import ApiEnv, api_env, body, make_settings

BASE = "/api/v3"
POOLS = [{"name": "debian-12", "size": 2, "dns_plugin": "example"}, {"name": "centos-9", "size": 1}]


def beaker_tags(name: str) -> dict[str, Any]:
    """What Beaker merges into every host's tags; options it was not given are JSON null."""
    return {
        "beaker_version": "6.2.0",
        "jenkins_build_url": None,
        "department": "unknown",
        "project": None,
        "created_by": "ci",
        "name": name,
        "roles": "master, agent",
    }


def vmhostname(answer: dict[str, Any], template: str) -> list[str]:
    """Beaker's reading of a checkout answer: ``hostname`` string or array, joined with ``domain``
    when the answer has one."""
    hostname = answer[template]["hostname"]
    names = hostname if isinstance(hostname, list) else [hostname]
    domain = answer.get("domain")
    return [f"{h}.{domain}" if domain else h for h in names]


@pytest.fixture
async def open_api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, make_settings(POOLS)) as env:
        await env.seed("debian-12", 2)
        await env.seed("centos-9", 1)
        yield env


@pytest.fixture
async def token_api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, make_settings(POOLS, auth={"provider": "dummy"})) as env:
        await env.seed("debian-12", 2)
        await env.seed("centos-9", 1)
        yield env


async def test_provision_tag_and_cleanup_without_a_token(open_api: ApiEnv) -> None:
    c = open_api.client
    got = await c.post(f"{BASE}/vm/", content=b'{"debian-12":"2","centos-9":"1"}')
    assert got.status_code == 200
    answer = body(got)
    assert answer["ok"] is True
    debian, centos = vmhostname(answer, "debian-12"), vmhostname(answer, "centos-9")
    assert len(debian) == 2
    assert all(h.endswith(".example.com") for h in debian)
    assert len(centos) == 1
    assert "." not in centos[0]  # no DNS config on this pool: the short name is the hostname
    await open_api.project()

    for host in [*debian, *centos]:
        short = host.split(".")[0]
        put = await c.put(f"{BASE}/vm/{short}", json={"tags": beaker_tags(short)})
        assert (put.status_code, body(put)) == (200, {"ok": True})
    await open_api.project()
    short = debian[0].split(".")[0]
    shown = body(await c.get(f"{BASE}/vm/{short}"))[short]
    # null tags are dropped, the rest stored as given
    assert shown["tags"] == {
        "beaker_version": "6.2.0",
        "department": "unknown",
        "created_by": "ci",
        "name": short,
        "roles": "master, agent",
    }

    for host in [*debian, *centos]:
        gone = await c.delete(f"{BASE}/vm/{host}")
        assert (gone.status_code, body(gone)) == (200, {"ok": True})
    assert await open_api.in_state("debian-12", "running") == []
    assert await open_api.in_state("centos-9", "running") == []


async def test_a_set_that_cannot_be_met_takes_nothing_so_beaker_can_retry(open_api: ApiEnv) -> None:
    before = await open_api.in_state("debian-12", "ready")
    # three debian hosts from a pool with two ready: vmpooler's all-or-nothing 503
    got = await open_api.client.post(f"{BASE}/vm/", content=b'{"debian-12":"3","centos-9":"1"}')
    assert (got.status_code, body(got)) == (503, {"ok": False})
    assert await open_api.in_state("debian-12", "ready") == before
    assert len(await open_api.in_state("centos-9", "ready")) == 1
    # Beaker's retry of the same set after the pool refilled would succeed; a smaller set does now
    again = await open_api.client.post(f"{BASE}/vm/", content=b'{"debian-12":"2"}')
    assert again.status_code == 200


async def test_with_a_token_checkout_tagging_and_cleanup_work(token_api: ApiEnv) -> None:
    c = token_api.client
    basic = {"Authorization": "Basic " + base64.b64encode(b"beaker:secret").decode()}
    token = body(await c.post(f"{BASE}/token", headers=basic))["token"]
    auth = {"X-AUTH-TOKEN": token}

    got = await c.post(f"{BASE}/vm/", content=b'{"debian-12":"1"}', headers=auth)
    assert got.status_code == 200
    (host,) = vmhostname(body(got), "debian-12")
    short = host.split(".")[0]
    await token_api.project()

    # Beaker tags without its token: a VM checked out with a token takes no change without it, tags
    # included (vmpooler lets anyone retag it; docs/compatibility.md), so the tags are refused...
    put = await c.put(f"{BASE}/vm/{short}", json={"tags": beaker_tags(short)})
    assert (put.status_code, body(put)) == (401, {"ok": False})
    # ...as is a lifetime change without the token that checked the VM out
    put = await c.put(f"{BASE}/vm/{short}", json={"lifetime": 3})
    assert (put.status_code, body(put)) == (401, {"ok": False})
    # with its token both go through
    put = await c.put(f"{BASE}/vm/{short}", json={"tags": beaker_tags(short)}, headers=auth)
    assert (put.status_code, body(put)) == (200, {"ok": True})

    # a stale or wrong token says "unauthorized", not "pool not available" (Beaker issue 1251)
    stale = await c.post(f"{BASE}/vm/", content=b'{"debian-12":"1"}', headers={"X-AUTH-TOKEN": "nope"})
    assert stale.status_code == 401

    gone = await c.delete(f"{BASE}/vm/{host}", headers=auth)
    assert (gone.status_code, body(gone)) == (200, {"ok": True})
    assert await token_api.in_state("debian-12", "running") == []
