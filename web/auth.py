"""Who is asking: HTTP basic auth for token management, ``X-AUTH-TOKEN`` for everything else.

Authentication is on when ``:auth:`` is configured. Basic credentials are checked by an
:class:`Authenticator` the composition root picks: :class:`DummyAuthenticator` (vmpooler's test
provider: any user whose password differs from the name; the service refuses it without
``VMPOOLER_DEBUG``) or the LDAP one in ``web.auth_ldap``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Protocol

from litestar import Request, Response

from commands.checkout import ANONYMOUS, Requester
from commands.errors import Unauthorized
from commands.settings import Settings
from commands.tokens import Tokens, token_hash
from web._json import json_response
from web._paths import method_of, route_of

__all__ = [
    "Auth",
    "AuthUnavailable",
    "Authenticator",
    "DummyAuthenticator",
    "RefuseAll",
    "auth_unavailable_response",
]

log = logging.getLogger(__name__)


class AuthUnavailable(Exception):
    """The authentication backend could not answer (unreachable, TLS failure, timeout): HTTP 503.

    It says nothing about the credentials, so it must never be turned into a 401.
    """


class Authenticator(Protocol):
    """Checks a user name and password (the port behind basic auth)."""

    async def authenticate(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s.

        Args:
            user: the basic-auth user name (non-empty).
            password: the password as sent (may be empty).

        Returns:
            True for valid credentials, False for wrong ones or an unknown user.

        Raises:
            AuthUnavailable: the backend could not decide.
        """
        ...


class DummyAuthenticator:
    """vmpooler's ``dummy`` provider: accepts any user whose password differs from the name."""

    async def authenticate(self, user: str, password: str) -> bool:
        return user != password


class RefuseAll:
    """Refuses everyone: for a provider that was configured but not built (never for real use)."""

    async def authenticate(self, user: str, password: str) -> bool:
        log.warning("no authenticator is wired for this provider: refusing %r", user)
        return False


def auth_unavailable_response(request: Request[Any, Any, Any], exc: AuthUnavailable) -> Response[bytes]:
    """The API's answer when the authentication backend is down: 503 with a clear error."""
    where = f"{method_of(request.scope)} {route_of(request.scope)}"
    log.warning("%s: authentication backend unavailable: %s", where, exc)
    body = {"ok": False, "error": "authentication service unavailable"}
    return json_response(body, 503, headers={"Retry-After": "5"})


class Auth:
    """Checks credentials against the configured authenticator and the token registry."""

    def __init__(
        self, settings: Settings, tokens: Tokens, authenticator: Authenticator | None = None
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        if authenticator is None:
            provider = settings.auth.provider if settings.auth is not None else None
            authenticator = DummyAuthenticator() if provider == "dummy" else RefuseAll()
        self.authenticator = authenticator

    @property
    def configured(self) -> bool:
        return self.settings.auth is not None

    async def basic_user(self, request: Request[Any, Any, Any]) -> str:
        """The user of a valid ``Authorization: Basic`` header.

        Raises:
            Unauthorized: missing, malformed or wrong credentials.
            AuthUnavailable: the authentication backend could not decide.
        """
        if not self.configured:
            raise Unauthorized("authentication is not configured")
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed basic credentials") from None
        if scheme.lower() != "basic" or not sep or not user:
            raise Unauthorized("malformed basic credentials")
        if not await self.authenticator.authenticate(user, password):
            raise Unauthorized("wrong basic credentials")
        return user

    async def requester(self, request: Request[Any, Any, Any], *, required: bool) -> Requester:
        """The caller behind ``X-AUTH-TOKEN`` when auth is configured (:data:`ANONYMOUS` otherwise,
        or when no token was sent and none is ``required``); records the token's use.

        Raises:
            Unauthorized: a token was sent but is not valid, or one is required and missing.
        """
        if not self.configured:
            return ANONYMOUS
        token = request.headers.get("x-auth-token", "")
        if not token:
            if required:
                raise Unauthorized("a token is required")
            return ANONYMOUS
        info = await self.tokens.lookup(token)
        if info is None:
            raise Unauthorized("invalid token")
        await self.tokens.touch(token)
        return Requester(user=info.user, token_hash=token_hash(token), admin=self.is_admin(info.user))

    def is_admin(self, user: str) -> bool:
        """Whether ``user`` is one of ``:auth: admins``."""
        auth = self.settings.auth
        return auth is not None and user in auth.admins
