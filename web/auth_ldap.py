"""LDAP authentication (``:auth: provider: ldap``), as vmpooler does it, without blocking the event loop.

For every ``base`` x ``user_object`` in configured order the user is tried until one bind succeeds:

* without ``service_account_hash``: bind as ``<user_object>=<user>,<base>`` with the user's password;
* with it: bind as the service account, search ``(<user_object>=<user>)`` under ``base`` and bind as
  the entry found with the user's password.

ldap3 is blocking, so each authentication runs in a small bounded thread pool under an overall
timeout. Wrong credentials and unknown users are ``False`` (HTTP 401); a server that cannot be
reached, a TLS failure or a timeout raise :class:`web.auth.AuthUnavailable` (HTTP 503). An empty
password is refused without asking the server: LDAP treats it as an anonymous bind, which succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPInvalidCredentialsResult, LDAPOperationResult
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from commands.settings import ConfigError, LdapSettings
from web.auth import AuthUnavailable

__all__ = ["LdapAuthenticator"]

log = logging.getLogger(__name__)

_METHODS = {
    "": "plain",
    "plain": "plain",
    "none": "plain",
    "simple_tls": "simple_tls",
    "start_tls": "start_tls",
}


class _Unavailable(Exception):
    """Raised in the worker thread when the server could not answer (mapped to AuthUnavailable)."""


class LdapAuthenticator:
    """Authenticates basic-auth users against LDAP (implements ``web.auth.Authenticator``).

    Args:
        settings: the ``:auth: :ldap:`` section.
        max_concurrent: authentications running at once; more wait (within their timeout).

    Raises:
        ConfigError: the encryption method is unknown, or there is no base or user object to try.
    """

    def __init__(self, settings: LdapSettings, *, max_concurrent: int = 4) -> None:
        encryption = settings.encryption
        method = (encryption.method if encryption else "").lower()
        if method not in _METHODS:
            raise ConfigError(
                f":auth: ldap: encryption: method: {method!r} is not one of simple_tls, start_tls, plain"
            )
        if not settings.base or not settings.user_object:
            raise ConfigError(":auth: ldap: base and user_object are required when the auth provider is ldap")
        self.settings = settings
        self.method = _METHODS[method]
        self._tls = _tls(encryption.tls_options if encryption else {}) if self.method != "plain" else None
        self._executor = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="ldap-auth")

    async def authenticate(self, user: str, password: str) -> bool:
        """Whether ``user``/``password`` bind for some base x user object (see the module docstring).

        Raises:
            AuthUnavailable: the server could not be reached or did not answer in time.
        """
        if not user or not password:
            return False
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._authenticate, user, password)
        try:
            return await asyncio.wait_for(future, timeout=self.settings.timeout)
        except TimeoutError:
            raise AuthUnavailable(
                f"LDAP server {self._where()} did not answer in {self.settings.timeout:g} s"
            ) from None
        except _Unavailable as exc:
            raise AuthUnavailable(str(exc)) from None

    def close(self) -> None:
        """Stop the worker threads (authentications in flight finish first)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _authenticate(self, user: str, password: str) -> bool:
        """The blocking part: one connection, rebound for each attempt."""
        try:
            conn = self._connect()
        except Exception as exc:  # ldap3 lets socket and struct errors through as they are
            raise _Unavailable(f"LDAP server {self._where()} unreachable: {exc}") from None
        try:
            service = self.settings.service_account_hash
            for base in self.settings.base:
                for attribute in self.settings.user_object:
                    if service is None:
                        found: str | None = f"{attribute}={escape_rdn(user)},{base}"
                    else:
                        found = self._search(conn, base, attribute, user)
                    if found is not None and self._bind(conn, found, password):
                        return True
            return False
        except _Unavailable:
            raise
        except Exception as exc:
            log.warning("LDAP authentication of %r failed", user, exc_info=exc)
            raise _Unavailable(f"LDAP server {self._where()} failed: {exc}") from None
        finally:
            with contextlib.suppress(LDAPException, OSError):
                conn.unbind()

    def _connect(self) -> ldap3.Connection:
        # A Server per attempt: ldap3 keeps per-server connection state that threads should not share.
        server = ldap3.Server(
            self.settings.host,
            port=self.settings.port,
            use_ssl=self.method == "simple_tls",
            tls=self._tls,
            get_info=ldap3.NONE,
            connect_timeout=self.settings.timeout,
        )
        conn = ldap3.Connection(
            server,
            receive_timeout=math.ceil(self.settings.timeout),  # ldap3 packs it as an integer
            raise_exceptions=False,
            auto_referrals=False,
            read_only=True,
        )
        conn.open(read_server_info=False)
        if self.method == "start_tls" and not conn.start_tls(read_server_info=False):
            conn.unbind()
            raise ldap3.core.exceptions.LDAPStartTLSError(f"StartTLS refused: {conn.result}")
        return conn

    @staticmethod
    def _bind(conn: ldap3.Connection, dn: str, password: str) -> bool:
        try:
            return bool(conn.rebind(user=dn, password=password, read_server_info=False))
        except (LDAPInvalidCredentialsResult, LDAPOperationResult):
            return False

    def _search(self, conn: ldap3.Connection, base: str, attribute: str, user: str) -> str | None:
        """The DN of the first entry ``(<attribute>=<user>)`` under ``base`` (as net-ldap's
        ``bind_as``), searched as the service account."""
        service = self.settings.service_account_hash
        assert service is not None
        if not self._bind(conn, service.user_dn, service.password):
            # A misconfigured service account is an operator problem, not the user's: say so loudly.
            log.error("LDAP service account %r could not bind to %s", service.user_dn, self._where())
            raise _Unavailable(f"LDAP service account {service.user_dn!r} could not bind")
        query = f"({escape_filter_chars(attribute)}={escape_filter_chars(user)})"
        if not conn.search(base, query, search_scope=ldap3.SUBTREE, attributes=[]):
            return None
        entries = [entry for entry in conn.response or [] if entry.get("type") == "searchResEntry"]
        return str(entries[0]["dn"]) if entries else None


def _tls(options: dict[str, Any]) -> ldap3.Tls:
    """ldap3's TLS settings from ``tls_options`` (``ca_file``, ``verify_mode``; the rest is ignored)."""
    verify = str(options.get("verify_mode", "required")).lower().lstrip(":")
    mode = ssl.CERT_NONE if verify in {"none", "verify_none", "0", "false"} else ssl.CERT_REQUIRED
    ca_file = options.get("ca_file")
    return ldap3.Tls(validate=mode, ca_certs_file=str(ca_file) if ca_file else None)
