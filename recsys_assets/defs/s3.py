"""S3 connection settings shared by every resource that may read or write ``s3://``.

Give secrets as ``dg.EnvVar`` so they never land in run config: see ``definitions.py``.
"""

import typing

import dagster as dg


class S3Config(dg.Config):
    endpoint_url: typing.Optional[str] = None
    """An S3-compatible endpoint (MinIO, a moto server); None for AWS itself."""
    aws_access_key_id: typing.Optional[str] = None
    aws_secret_access_key: typing.Optional[str] = None
    region_name: typing.Optional[str] = None

    def options(self) -> dict[str, typing.Optional[str]]:
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_access_key,
            "region_name": self.region_name,
        }
