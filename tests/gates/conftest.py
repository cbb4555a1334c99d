"""Fixtures shared by the gates tests: a real S3-compatible server (moto) for the object-storage registry."""

from tests.service.s3_server import s3_endpoint, s3_env, s3_registry_url  # noqa: F401 (fixtures)
