"""The vSphere provider (vmpooler's ``vsphere`` type) on pyvmomi; see :class:`VsphereProvider`."""

from __future__ import annotations

from providers.vsphere.provider import VsphereProvider

__all__ = ["VsphereProvider"]
