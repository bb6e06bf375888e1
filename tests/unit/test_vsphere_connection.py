"""The vSphere connection pool's pure parts: what its credentials and errors show."""

from __future__ import annotations

import pytest

pytest.importorskip("pyVmomi", reason="pyvmomi is not installed (pip install pyvmomi)")

from providers.vsphere.connection import Credentials


def test_credentials_repr_hides_the_password() -> None:
    creds = Credentials(server="vc.example", username="admin", password="s3cr3t-Pa55")
    shown = f"{creds!r} {creds!s}"
    assert "s3cr3t-Pa55" not in shown
    assert "vc.example" in shown
    assert "admin" in shown
