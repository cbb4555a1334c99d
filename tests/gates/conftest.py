"""Fixtures shared by the gates tests: a real S3-compatible server (moto) for the object-storage registry, and the
tiny model's export the drift tests serve."""

from __future__ import annotations

import pytest

from tests.service.s3_server import s3_endpoint, s3_env, s3_registry_url  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model exported at dims 32 and 16, fp32 (the drift tests' served model)."""
    from training.export.export_run import export_run

    out = tmp_path_factory.mktemp("drift-export") / "onnx"
    export_run(tiny_model_dir, out, dims=[32, 16], int8=False)
    return out
