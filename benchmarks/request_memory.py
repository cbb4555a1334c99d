"""Worker memory (RSS) under large requests: does memory return after a large request, and where does it settle?

    python benchmarks/request_memory.py                     # MiniLM export (made once, as serve_throughput.py does)
    python benchmarks/request_memory.py --requests 100 --texts 66 --chars 30000 --workdir /tmp/embedgate-memory

Starts `bentoml serve service.app:EmbedgateService` on a registry holding all-MiniLM-L6-v2 (fp32), measures the
worker's RSS when ready, after one small request, then after each of `--requests` requests of `--texts` texts of
`--chars` characters (truncated to the model's 256 tokens), then after 20 small requests. Prints the RSS series,
the growth from the 10th large request to the last (the part that would be a leak), and the load averages.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import load_text, served, timed  # noqa: E402
from benchmarks.serve_throughput import prepare, service_argv  # noqa: E402

WORDS = (
    "the patient took a tablet for the pain in the heart and the doctor wrote a note about blood pressure "
    "tenant landlord lease deposit court claim insurance policy coverage"
).split()


def worker_rss_mb(root: psutil.Process) -> float:
    """The largest RSS among the server's processes (the worker holding the model), in MB."""
    sizes = [p.memory_info().rss for p in [root, *root.children(recursive=True)] if p.is_running()]
    return max(sizes) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/embedgate-serve-bench"))
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--texts", type=int, default=66)
    parser.add_argument("--chars", type=int, default=30_000)
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    _, registry = prepare(args.workdir)
    rng = random.Random(0)
    text = " ".join(rng.choice(WORDS) for _ in range(args.chars // 5))[: args.chars]
    large = {"input": [text] * args.texts}
    env = {
        "EMBEDGATE_REGISTRY": str(registry),
        "EMBEDGATE_DRIFT_SAMPLE_RATE": "0",
        "EMBEDGATE_MAX_PAYLOAD_BYTES": str(4 * args.texts * args.chars + 1000),
        "EMBEDGATE_MAX_INPUT_CHARS": str(args.chars),
        "EMBEDGATE_REQUEST_TIMEOUT_S": "600",
        "BENTOML_DO_NOT_TRACK": "true",
    }
    log = args.workdir / "memory-server.log"
    with served(service_argv, ready="/ready", env=env, port=args.port, log_path=log) as server:
        root = psutil.Process(server.process.pid)
        with httpx.Client(base_url=server.url, timeout=300) as client:
            client.post("/v1/embeddings", json={"input": "warm up"}).raise_for_status()
            series = [("ready + 1 small", worker_rss_mb(root))]
            with timed() as took:
                for index in range(1, args.requests + 1):
                    response = client.post("/v1/embeddings", json=large)
                    response.raise_for_status()
                    if index in (1, 2, 5, 10, 25, 50, 75, 100) or index == args.requests:
                        series.append((f"after large #{index}", worker_rss_mb(root)))
            for _ in range(20):
                client.post("/v1/embeddings", json={"input": "small"}).raise_for_status()
            series.append(("after 20 small", worker_rss_mb(root)))
    print(
        f"{args.requests} requests x {args.texts} texts x {args.chars} chars in {took.seconds:.1f} s; "
        f"{load_text()}"
    )
    for label, rss in series:
        print(f"  {label:<20} {rss:8.1f} MB")
    tenth = dict(series).get("after large #10")
    if tenth is not None:
        print(f"growth from large #10 to the last: {series[-2][1] - tenth:+.1f} MB")


if __name__ == "__main__":
    main()
