"""The ``:auth:`` section: token and basic authentication against a dummy check or LDAP."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = ["AuthSettings", "LdapEncryption", "LdapServiceAccount", "LdapSettings"]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=300)]


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
        method: ``simple_tls`` (LDAPS) or ``start_tls`` (a Ruby symbol's leading ``:`` is dropped); empty
            or ``plain`` for none.
        tls_options: TLS options as given. Used: ``ca_file`` (CA bundle to verify the server with),
            ``verify_mode`` (``none`` turns certificate checks off; default: verify); others, such as
            Ruby's ``ssl_version``, are accepted and ignored (the TLS version is negotiated).
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
        timeout: seconds one authentication may take in all (connect, TLS, binds, search) before the
            API answers 503; not a vmpooler key.
    """

    host: str = ""
    port: Port = 389
    base: tuple[str, ...] = ()
    user_object: tuple[str, ...] = ()
    service_account_hash: LdapServiceAccount | None = None
    encryption: LdapEncryption | None = None
    timeout: Seconds = 10.0


class AuthSettings(_Section, frozen=True):
    """The ``:auth:`` section; its presence turns authentication on.

    Attributes:
        provider: ``dummy`` (any user whose name differs from the password; for development only) or
            ``ldap``.
        ldap: LDAP settings, required when ``provider`` is ``ldap``.
        admins: users whose tokens may change, return and delete any VM or on-demand request, not
            only those checked out with the same token (a string in the YAML becomes one entry);
            with admins set, only they may change pools at run time. Not a vmpooler key.
        max_running_per_user: running VMs a user (with a token) may hold at once, checked at checkout
            and on-demand request; 0: no cap. Not a vmpooler key.
        max_ondemand_requests_per_user: pending on-demand requests a user may have; 0: no cap. Not a
            vmpooler key.
    """

    provider: Literal["dummy", "ldap"]
    ldap: LdapSettings | None = None
    admins: tuple[str, ...] = ()
    max_running_per_user: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_ondemand_requests_per_user: Annotated[int, msgspec.Meta(ge=0)] = 0
