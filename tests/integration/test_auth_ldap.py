"""LDAP authentication against a real slapd: bases x user objects, the service account's search,
wrong and unknown users, a server that is down or silent, and the token endpoints over HTTP."""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from commands.settings import ConfigError, LdapSettings, Settings
from events import Keys
from tests.integration._api import FakeClock, app_deps, body, make_settings
from tests.ldap.slapd import SUFFIX, Slapd, available, free_port
from vmpooler.wiring import build_authenticator
from web.app import create_app
from web.auth import AuthUnavailable
from web.auth_ldap import LdapAuthenticator

NO_SLAPD = "needs /usr/sbin/slapd and ldap-utils (apt: slapd ldap-utils)"

BASES = [f"ou=people,{SUFFIX}", f"ou=staff,{SUFFIX}"]
SERVICE = {"user_dn": f"cn=svc,{SUFFIX}", "password": "svc-pw"}


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    if not available():
        pytest.skip(NO_SLAPD)
    server = Slapd(tmp_path_factory.mktemp("slapd")).start()
    try:
        yield server
    finally:
        server.stop()


def ldap_settings(port: int, **ldap: Any) -> Settings:
    section = {"host": "127.0.0.1", "port": port, "base": BASES, "user_object": ["uid", "cn"], **ldap}
    return make_settings([{"name": "pool1", "size": 1}], auth={"provider": "ldap", "ldap": section})


def authenticator(settings: Settings) -> LdapAuthenticator:
    built = build_authenticator(settings)
    assert isinstance(built, LdapAuthenticator)
    return built


@pytest.mark.parametrize(
    ("user", "password", "ok"),
    [
        ("alice", "alice-pw", True),  # first base, first user object
        ("dave", "dave-pw", True),  # second base
        ("carol", "carol-pw", True),  # second base, second user object (cn)
        ("alice", "wrong", False),
        ("alice", "", False),  # an empty password would be an anonymous bind: refused up front
        ("nobody", "nobody-pw", False),
        ("erin", "erin-pw", False),  # her DN is not uid=erin,...: only a search finds her
        ("alice,ou=staff", "alice-pw", False),  # no DN injection
    ],
)
async def test_bind_as_user_tries_every_base_and_user_object(
    slapd: Slapd, user: str, password: str, ok: bool
) -> None:
    auth = authenticator(ldap_settings(slapd.port))
    try:
        assert await auth.authenticate(user, password) is ok
    finally:
        auth.close()


@pytest.mark.parametrize(
    ("user", "password", "ok"),
    [
        ("erin", "erin-pw", True),
        ("alice", "alice-pw", True),
        ("carol", "carol-pw", True),  # found by cn
        ("erin", "alice-pw", False),
        ("nobody", "x", False),
        ("*", "alice-pw", False),  # no filter injection
    ],
)
async def test_service_account_searches_then_binds_as_the_user(
    slapd: Slapd, user: str, password: str, ok: bool
) -> None:
    auth = authenticator(ldap_settings(slapd.port, base=SUFFIX, service_account_hash=SERVICE))
    try:
        assert await auth.authenticate(user, password) is ok
    finally:
        auth.close()


@pytest.mark.parametrize("method", [":start_tls", "simple_tls"])
async def test_tls_verifies_the_server_certificate(slapd: Slapd, method: str) -> None:
    if not slapd.tls_port:
        pytest.skip("needs openssl to make the server certificate")
    port = slapd.tls_port if method == "simple_tls" else slapd.port
    trusted = {"method": method, "tls_options": {"ca_file": str(slapd.ca_file), "ssl_version": "TLSv1_2"}}
    auth = authenticator(ldap_settings(port, encryption=trusted))
    untrusted = authenticator(ldap_settings(port, encryption={"method": method}, timeout=3))
    try:
        assert await auth.authenticate("carol", "carol-pw") is True
        assert await auth.authenticate("carol", "wrong") is False
        with pytest.raises(AuthUnavailable):  # a self-signed certificate we were not told to trust
            await untrusted.authenticate("carol", "carol-pw")
    finally:
        auth.close()
        untrusted.close()


async def test_wrong_service_account_is_unavailable_not_401(slapd: Slapd) -> None:
    auth = authenticator(ldap_settings(slapd.port, service_account_hash={**SERVICE, "password": "nope"}))
    try:
        with pytest.raises(AuthUnavailable, match="service account"):
            await auth.authenticate("alice", "alice-pw")
    finally:
        auth.close()


async def test_server_down_is_unavailable() -> None:
    auth = authenticator(ldap_settings(free_port(), timeout=2))
    try:
        with pytest.raises(AuthUnavailable, match="unreachable"):
            await auth.authenticate("alice", "alice-pw")
    finally:
        auth.close()


async def test_silent_server_times_out() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        auth = authenticator(ldap_settings(silent.getsockname()[1], timeout=0.5))
        try:
            with pytest.raises(AuthUnavailable):
                await auth.authenticate("alice", "alice-pw")
        finally:
            auth.close()


def test_unknown_encryption_method_stops_startup() -> None:
    with pytest.raises(ConfigError, match="encryption: method"):
        build_authenticator(ldap_settings(389, encryption={"method": ":tls_please"}))
    plain = LdapSettings(host="h", base=("b",), user_object=("uid",))
    assert LdapAuthenticator(plain).method == "plain"


@contextlib.asynccontextmanager
async def ldap_api(redis_url: str, prefix: str, settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    keys, clock = Keys(prefix), FakeClock()
    app_redis = aioredis.Redis.from_url(redis_url)
    auth = build_authenticator(settings)
    deps = app_deps(settings, app_redis, keys, clock, authenticator=auth)
    async with AsyncTestClient(create_app(deps)) as client:
        try:
            yield client
        finally:
            client.blocking_portal.call(app_redis.aclose)
            if isinstance(auth, LdapAuthenticator):
                auth.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_token_lifecycle_over_http_with_ldap(slapd: Slapd, redis_url: str, prefix: str) -> None:
    async with ldap_api(redis_url, prefix, ldap_settings(slapd.port)) as client:
        carol = basic("carol", "carol-pw")
        created = await client.post("/api/v3/token", headers=carol)
        assert created.status_code == 200, created.text
        token = body(created)["token"]
        listed = await client.get("/api/v3/token", headers=carol)
        assert listed.status_code == 200
        assert len([k for k in body(listed) if k != "ok"]) == 1
        assert body(await client.get(f"/api/v3/token/{token}"))[token]["user"] == "carol"

        for headers in (basic("carol", "wrong"), basic("nobody", "x"), basic("carol", ""), {}):
            denied = await client.delete(f"/api/v3/token/{token}", headers=headers)
            assert (denied.status_code, body(denied)) == (401, {"ok": False})
            assert denied.headers["www-authenticate"] == 'Basic realm="Authentication required"'
        assert (
            await client.delete(f"/api/v3/token/{token}", headers=basic("alice", "alice-pw"))
        ).status_code == 401
        assert (await client.delete(f"/api/v3/token/{token}", headers=carol)).status_code == 200
        assert (await client.get(f"/api/v3/token/{token}")).status_code == 404


async def test_ldap_down_over_http_is_a_clear_503(redis_url: str, prefix: str) -> None:
    async with ldap_api(redis_url, prefix, ldap_settings(free_port(), timeout=2)) as client:
        response = await client.post("/api/v3/token", headers=basic("alice", "alice-pw"))
        assert response.status_code == 503
        assert body(response) == {"ok": False, "error": "authentication service unavailable"}
        assert response.headers["retry-after"] == "5"
        # a request that never reaches LDAP is still a plain 401
        assert (await client.post("/api/v3/token")).status_code == 401
