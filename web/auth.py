"""Who is asking: HTTP basic auth for token management, ``X-AUTH-TOKEN`` for everything else.

Authentication is on when ``:auth:`` is configured. ``dummy`` accepts a user whose password differs
from the name (vmpooler's test provider; the service refuses it without ``VMPOOLER_DEBUG``); ``ldap``
is not implemented yet and refuses everyone.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from litestar import Request

from commands.checkout import Requester
from commands.errors import Unauthorized
from commands.settings import Settings
from commands.tokens import Tokens, token_hash

__all__ = ["Auth"]

log = logging.getLogger(__name__)


class Auth:
    """Checks credentials against the configured ``:auth:`` provider and the token registry."""

    def __init__(self, settings: Settings, tokens: Tokens) -> None:
        self.settings = settings
        self.tokens = tokens

    @property
    def configured(self) -> bool:
        return self.settings.auth is not None

    def basic_user(self, request: Request[Any, Any, Any]) -> str:
        """The user of a valid ``Authorization: Basic`` header.

        Raises:
            Unauthorized: missing, malformed or wrong credentials.
        """
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed basic credentials") from None
        if scheme.lower() != "basic" or not sep or not user or not self._accepts(user, password):
            raise Unauthorized("wrong basic credentials")
        return user

    def _accepts(self, user: str, password: str) -> bool:
        auth = self.settings.auth
        if auth is None:
            return False
        if auth.provider == "dummy":
            return user != password
        log.warning("LDAP authentication is not implemented yet: refusing %r", user)
        return False

    async def requester(self, request: Request[Any, Any, Any], *, required: bool) -> Requester | None:
        """The caller behind ``X-AUTH-TOKEN`` when auth is configured (``None`` otherwise, or when no
        token was sent and none is ``required``); records the token's use.

        Raises:
            Unauthorized: a token was sent but is not valid, or one is required and missing.
        """
        if not self.configured:
            return None
        token = request.headers.get("x-auth-token", "")
        if not token:
            if required:
                raise Unauthorized("a token is required")
            return None
        info = await self.tokens.lookup(token)
        if info is None:
            raise Unauthorized("invalid token")
        await self.tokens.touch(token)
        return Requester(user=info.user, token_hash=token_hash(token))

    async def owner_check(self, request: Request[Any, Any, Any], vm_token_hash: str) -> None:
        """A VM checked out with a token can only be changed with that same token (vmpooler lets any
        valid token touch any VM; we do not).

        Raises:
            Unauthorized: the VM has a token and the request does not carry it.
        """
        if not vm_token_hash:
            return
        token = request.headers.get("x-auth-token", "")
        if not token or token_hash(token) != vm_token_hash or await self.tokens.lookup(token) is None:
            raise Unauthorized("the VM was checked out with another token")
        await self.tokens.touch(token)
