"""Promotion time and a reader's first fetch: a local registry folder vs the same registry on an S3 server.

    make s3-test-server && python benchmarks/registry_object_storage.py --size-mb 90 --rounds 3

The S3 server is moto's (tests/service/s3_server.py, started on 127.0.0.1 and stopped after): it runs in Python on
the same cores, so the S3 numbers are an upper bound for the request count and a lower bound for network cost
(a real bucket adds round trips of milliseconds each). The artifact is one `--size-mb` graph plus 20 small files,
the shape of an ONNX export. Measured: `add_version` (copy or upload + manifest + champion switch + history), and
`version_dir` on a fresh reader (S3: download + sha256 verify into the cache; local: the folder as is).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import load_text, moto_s3, timed  # noqa: E402
from service.registry.registry import Registry  # noqa: E402


def _artifact(root: Path, size_mb: int) -> Path:
    (root / "d384").mkdir(parents=True)
    (root / "d384" / "model.onnx").write_bytes(os.urandom(size_mb << 20))
    for i in range(20):
        (root / f"tokenizer-{i}.json").write_text("{}" * 500)
    return root


def _time_promotions(location: str, src: Path, rounds: int) -> tuple[list[float], list[float]]:
    promote, fetch = [], []
    for _ in range(rounds):
        with timed() as took:
            version = Registry(location).add_version({"onnx": src}, metadata={}, who="bench", reason="bench")
        promote.append(took.seconds)
        with timed() as took:
            Registry(location).version_dir(version)
        fetch.append(took.seconds)
    return promote, fetch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=90)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with moto_s3() as s3_env, tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ.update({**s3_env, "EMBEDGATE_REGISTRY_CACHE": str(tmp_path / "cache")})
        src = _artifact(tmp_path / "artifact", args.size_mb)
        print(f"artifact: {args.size_mb} MiB graph + 20 small files; {args.rounds} rounds; {load_text()}")
        results = {}
        for name, location in (("local folder", str(tmp_path / "registry")), ("s3 (moto)", "s3://bench/reg")):
            results[name] = _time_promotions(location, src, args.rounds)
            promote, fetch = results[name]
            print(
                f"{name:13s} promote median {statistics.median(promote):6.2f} s   first fetch + verify "
                f"median {statistics.median(fetch):6.2f} s"
            )
        ratio = statistics.median(results["s3 (moto)"][0]) / statistics.median(results["local folder"][0])
        print(f"promotion s3/local: {ratio:.1f}x; after: {load_text()}")


if __name__ == "__main__":
    main()
