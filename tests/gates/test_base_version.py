"""`embedgate register-base` (gates/base_version.py): a registry started from the model clients use today, so the
first fine-tuned run is gated against it and can answer in its space (issue 25)."""

from __future__ import annotations

import numpy as np
import pytest

from gates.base_version import BaseRegistrationRefused, register_base
from gates.cli import main
from service.registry.registry import Registry


def test_the_base_model_becomes_v0001_the_champion_served_as_exported(tmp_path, tiny_model_dir):
    from service.model.embedder import OnnxEmbedder
    from training.export.export_run import export_run

    base = register_base(tmp_path / "registry", str(tiny_model_dir))
    registry = Registry(tmp_path / "registry")
    assert base.version == "v0001" and registry.champion().version == "v0001"
    manifest = registry.verify("v0001")
    assert manifest["serving_dim"] == base.dims[0] == base.serving_dim and manifest["base_model"]
    [entry] = registry.history()
    assert entry.action == "promote" and "as served (clients may hold its vectors); not gated" in entry.reason
    # the registered graph is the base model exported as any run's would be: the same vectors
    export_run(tiny_model_dir, tmp_path / "direct", dims=None, int8=False)
    texts = ["a lay question", "a legal passage"]
    served = OnnxEmbedder.from_export_dir(registry.version_dir("v0001") / "onnx").embed(texts)
    np.testing.assert_allclose(
        served, OnnxEmbedder.from_export_dir(tmp_path / "direct").embed(texts), atol=1e-6
    )


def test_a_registry_with_versions_or_a_dim_the_export_lacks_is_refused_and_nothing_is_written(
    tmp_path, tiny_model_dir, capsys
):
    root = tmp_path / "registry"
    with pytest.raises(BaseRegistrationRefused, match=r"serving dim 7: expected one of the exported dims"):
        register_base(root, str(tiny_model_dir), serving_dim=7)
    assert Registry(root).versions() == []  # nothing half-written
    register_base(root, str(tiny_model_dir))
    code = main(["register-base", str(tiny_model_dir), "--registry", str(root)])
    assert code == 1
    err = capsys.readouterr().err
    assert "already has 1 version(s) (v0001)" in err and "promote a gated run instead" in err
    assert Registry(root).versions() == ["v0001"]
    with pytest.raises(BaseRegistrationRefused, match=r"precision 'fp16': expected fp32 or int8"):
        register_base(tmp_path / "other", str(tiny_model_dir), precision="fp16")


def test_the_cli_says_what_was_registered(tmp_path, tiny_model_dir, capsys):
    root = tmp_path / "registry"
    assert main(["register-base", str(tiny_model_dir), "--registry", str(root), "--dims", "32,x"]) == 2
    assert "--dims '32,x': expected comma-separated integers" in capsys.readouterr().err
    args = [
        "register-base",
        str(tiny_model_dir),
        "--registry",
        str(root),
        "--dims",
        "32,16",
        "--serving-dim",
        "16",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "as v0001 (champion; serving dim 16; dims [32, 16])" in out and "also answers in its space" in out
    assert Registry(root).manifest("v0001")["serving_dim"] == 16
