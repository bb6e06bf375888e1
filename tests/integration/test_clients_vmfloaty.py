"""The request sequences vmfloaty sends (``floaty token get / get / list --active / query / modify /
snapshot / revert / delete / status / summary / token delete``), with what it reads from each answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.integration._api import ApiEnv, api_env, body, make_settings

SETTINGS = make_settings(
    [{"name": "debian-12", "size": 2, "dns_plugin": "example"}, {"name": "centos-9", "size": 1}],
    auth={"provider": "dummy"},
    config={"vm_lifetime": 2, "vm_lifetime_auth": 12},
)
USER = {"Authorization": "Basic " + base64.b64encode(b"floaty-user:hunter2").decode()}


@pytest.fixture
async def api(redis: aioredis.Redis, redis_url: str, prefix: str) -> AsyncIterator[ApiEnv]:
    async with api_env(redis, redis_url, prefix, SETTINGS) as env:
        await env.seed("debian-12", 2)
        await env.seed("centos-9", 1)
        yield env


async def test_a_floaty_session(api: ApiEnv) -> None:
    c = api.client
    # floaty token get: POST token with basic auth, reads ["token"]
    token = body(await c.post("/api/v3/token", headers=USER))["token"]
    auth = {"X-AUTH-TOKEN": token}

    # floaty list: GET vm, reads the array of pool names
    assert body(await c.get("/api/v3/vm")) == ["debian-12", "centos-9"]

    # floaty get debian-12=2 centos-9=1: POST vm/<os+os+os> with the token, reads [os]["hostname"]
    got = await c.post("/api/v3/vm/debian-12+debian-12+centos-9", headers=auth)
    assert got.status_code == 200
    answer = body(got)
    assert answer["ok"] is True
    debian = answer["debian-12"]["hostname"]
    assert isinstance(debian, list)
    assert len(debian) == 2
    assert all(h.endswith(".example.com") for h in debian)
    centos = answer["centos-9"]["hostname"]
    assert isinstance(centos, str)
    await api.project()

    # floaty list --active: GET token/<token>, reads [token]["vms"]["running"] (short names)
    status = body(await c.get(f"/api/v3/token/{token}"))
    assert sorted(status[token]["vms"]["running"]) == sorted([h.split(".")[0] for h in debian] + [centos])

    # floaty query <host>: GET vm/<host>, reads [host]["state"], ["lifetime"], ["running"], ["remaining"]
    vm = debian[0].split(".")[0]
    shown = body(await c.get(f"/api/v3/vm/{debian[0]}"))[vm]
    assert (shown["state"], shown["lifetime"]) == ("running", 12)
    assert {"running", "remaining", "template", "ip"} <= shown.keys()

    # floaty modify <host> --lifetime 4 --tags '{"team":"ci"}': PUT vm/<host> with the token
    put = await c.put(f"/api/v3/vm/{vm}", json={"lifetime": 4, "tags": {"team": "ci"}}, headers=auth)
    assert (put.status_code, body(put)) == (200, {"ok": True})
    # floaty modify --disk 8: POST vm/<host>/disk/8, reads [host]["disk"]
    disk = await c.post(f"/api/v3/vm/{vm}/disk/8", headers=auth)
    assert (disk.status_code, body(disk)) == (202, {"ok": True, vm: {"disk": "+8gb"}})

    # floaty snapshot <host>: POST vm/<host>/snapshot, reads [host]["snapshot"]
    snap = await c.post(f"/api/v3/vm/{vm}/snapshot", headers=auth)
    assert snap.status_code == 202
    name = body(snap)[vm]["snapshot"]
    assert len(name) == 32
    # floaty revert <host> <snapshot>: before the snapshot exists it is 404, as vmpooler
    assert (await c.post(f"/api/v3/vm/{vm}/snapshot/{name}", headers=auth)).status_code == 404

    # floaty status / summary: GET status, GET summary (read ["status"]["ok"], ["capacity"], ...)
    assert body(await c.get("/api/v3/status"))["status"]["ok"] in (True, False)
    assert {"boot", "clone", "tag", "daily"} <= body(await c.get("/api/v3/summary")).keys()

    # floaty delete <host>,<host>: DELETE vm/<host> with the token, reads ["ok"]
    for host in [*debian, centos]:
        gone = await c.delete(f"/api/v3/vm/{host}", headers=auth)
        assert (gone.status_code, body(gone)) == (200, {"ok": True})

    # floaty token delete <token>: DELETE token/<token> with basic auth
    assert body(await c.delete(f"/api/v3/token/{token}", headers=USER)) == {"ok": True}
    assert (await c.post("/api/v3/vm/centos-9", headers=auth)).status_code == 401  # revoked
