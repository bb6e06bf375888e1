"""A private OpenLDAP ``slapd`` for the LDAP tests: mdb backend in a temp dir, on a free loopback port.

Directory (suffix ``dc=example,dc=com``, every password is ``<name>-pw``):

* ``uid=alice,ou=people``   — found with the first base and the first user object;
* ``uid=dave,ou=staff``     — second base, first user object;
* ``cn=carol,ou=staff``     — second base, second user object (``cn``);
* ``cn=Erin Example,ou=people`` with ``uid: erin`` — only reachable by a search (service account);
* ``cn=svc``                — the service account (``svc-pw``).

Anonymous clients may only bind; entries are readable by bound users, so a search only works after
the service account's bind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SLAPD", "SUFFIX", "Slapd", "available", "free_port"]

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=example,dc=com"
ADMIN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "admin-pw"

_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{admin}"
rootpw {admin_pw}
directory {dir}/db
{tls}
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by anonymous auth
"""


def _person(dn: str, uid: str | None = None) -> str:
    rdn_value = dn.split(",")[0].split("=")[1]
    lines = [f"dn: {dn},{SUFFIX}", "objectClass: inetOrgPerson", f"cn: {rdn_value}", f"sn: {rdn_value}"]
    name = uid or rdn_value
    if uid or dn.startswith("uid="):
        lines.append(f"uid: {name}")
    lines.append(f"userPassword: {name}-pw")
    return "\n".join(lines)


_SEED = (
    "\n\n".join(
        [
            f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: example\ndc: example",
            f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
            f"dn: ou=staff,{SUFFIX}\nobjectClass: organizationalUnit\nou: staff",
            _person("uid=alice,ou=people"),
            _person("uid=dave,ou=staff"),
            _person("cn=carol,ou=staff"),
            _person("cn=Erin Example,ou=people", uid="erin"),
            _person("cn=svc"),
        ]
    )
    + "\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Slapd:
    """A running slapd; :meth:`stop` ends it (and only it)."""

    workdir: Path
    port: int = 0
    tls_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Slapd:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "slapd.conf"
        tls = self._certificate()
        conf.write_text(
            _CONF.format(dir=self.workdir, suffix=SUFFIX, admin=ADMIN, admin_pw=ADMIN_PW, tls=tls)
        )
        self.port = free_port()
        urls = f"ldap://127.0.0.1:{self.port}/"
        if tls:
            self.tls_port = free_port()
            urls += f" ldaps://127.0.0.1:{self.tls_port}/"
        self.process = subprocess.Popen(
            [SLAPD, "-h", urls, "-f", str(conf), "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "slapd.log").open("wb"),
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.workdir / "slapd.log").read_text(errors="replace")
                raise RuntimeError(f"slapd did not start: {log[-2000:]}")
            time.sleep(0.05)  # polling a subprocess's readiness, under a deadline
        subprocess.run(
            ["ldapadd", "-x", "-H", self.url, "-D", ADMIN, "-w", ADMIN_PW],
            input=_SEED.encode(),
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return self

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate the server presents (for ``tls_options: ca_file``)."""
        return self.workdir / "cert.pem"

    def _certificate(self) -> str:
        """A self-signed certificate for 127.0.0.1 and its slapd.conf lines ("" without openssl)."""
        if shutil.which("openssl") is None:
            return ""
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(self.workdir / "key.pem"),
                "-out",
                str(self.ca_file),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return f"TLSCertificateFile {self.ca_file}\nTLSCertificateKeyFile {self.workdir / 'key.pem'}"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    def _answers(self) -> bool:
        result = subprocess.run(
            ["ldapwhoami", "-x", "-H", self.url, "-D", ADMIN, "-w", ADMIN_PW],
            capture_output=True,
            timeout=5,
            check=False,
        )
        return result.returncode == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def available() -> bool:
    """Whether slapd and the ldap-utils client tools are installed."""
    return (
        Path(SLAPD).exists()
        and shutil.which("ldapadd") is not None
        and shutil.which("ldapwhoami") is not None
    )
