"""The ``:auth:`` section: token and basic authentication against a dummy check or LDAP."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = ["AuthSettings", "LdapEncryption", "LdapServiceAccount", "LdapSettings"]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class _Section(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every settings struct: immutable and keyword-only."""


class LdapServiceAccount(_Section, frozen=True):
    """``:auth: :ldap: service_account_hash``: bind as this account, then search for the user.

    Attributes:
        user_dn: distinguished name of the service account.
        password: its password.
    """

    user_dn: str
    password: str = ""


class LdapEncryption(_Section, frozen=True):
    """``:auth: :ldap: encryption``.

    Attributes:
        method: ``simple_tls`` or ``start_tls`` (a Ruby symbol's leading ``:`` is dropped); empty for none.
        tls_options: TLS options as given (for example ``ssl_version``).
    """

    method: str = ""
    tls_options: dict[str, Any] = msgspec.field(default_factory=dict)


class LdapSettings(_Section, frozen=True):
    """``:auth: :ldap:``.

    Attributes:
        host: LDAP server host.
        port: LDAP server port.
        base: search bases; each is tried in turn (a string in the YAML becomes one entry).
        user_object: user attributes (``uid``, ``cn`` ...); each is tried with each base.
        service_account_hash: service account to bind with before searching; ``None`` binds as the user.
        encryption: transport encryption; ``None`` for plain LDAP.
    """

    host: str = ""
    port: Port = 389
    base: tuple[str, ...] = ()
    user_object: tuple[str, ...] = ()
    service_account_hash: LdapServiceAccount | None = None
    encryption: LdapEncryption | None = None


class AuthSettings(_Section, frozen=True):
    """The ``:auth:`` section; its presence turns authentication on.

    Attributes:
        provider: ``dummy`` (any user whose name differs from the password; for development only) or
            ``ldap``.
        ldap: LDAP settings, required when ``provider`` is ``ldap``.
    """

    provider: Literal["dummy", "ldap"]
    ldap: LdapSettings | None = None
