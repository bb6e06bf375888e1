"""The EC2 provider (vmpooler's ``ec2`` type) on boto3; see :class:`Ec2Provider`."""

from __future__ import annotations

from providers.ec2.provider import Ec2Provider

__all__ = ["Ec2Provider"]
