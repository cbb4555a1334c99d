"""`embedgate embed --registry s3://...` (moto on 127.0.0.1) re-embeds with the version kept in the bucket, read
through the registry's verified cache: the same vectors as from a local registry holding the same export."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from gates.cli import main
from service.registry.registry import Registry
from tests.service.serving import promote

pytestmark = pytest.mark.integration


def test_embed_from_the_s3_registry_equals_the_local_registry(tmp_path, tiny_exports, s3_registry_url):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "text": f"lease number {i} and the court"}) + "\n" for i in range(40)
        )
    )
    promote(Registry(s3_registry_url), tiny_exports["a"])
    promote(Registry(tmp_path / "local"), tiny_exports["a"])
    tables = []
    for name, location in (("s3", s3_registry_url), ("local", str(tmp_path / "local"))):
        out = tmp_path / f"out-{name}"
        assert (
            main(
                [
                    "embed",
                    str(corpus),
                    "--version",
                    "v0001",
                    "--dim",
                    "8",
                    "--out",
                    str(out),
                    "--registry",
                    location,
                    "--threads",
                    "1",
                ]
            )
            == 0
        )
        tables.append(pq.read_table(out / "shards").sort_by("id"))
    assert tables[0].num_rows == 40
    assert tables[0].column("vector").to_pylist() == tables[1].column("vector").to_pylist()
