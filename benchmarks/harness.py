"""What the benchmarks share: a served process on 127.0.0.1, a BEIR folder's texts, a timed block with the load
average, and a markdown table. A script imports what it needs:

    from benchmarks.harness import load_beir_texts, markdown_table, moto_s3, served, timed

    with served(lambda port: [..., "--port", str(port)], ready="/ready", log_path=log) as server:
        httpx.post(f"{server.url}/v1/embeddings", ...)        # its process group is stopped on exit
    with moto_s3() as env: ...                                  # an S3 server (moto) and the AWS_* env that reaches it
    data = load_beir_texts(folder)                              # corpus / queries / qrels as plain dicts
    with timed("promote") as took: ...
    print(took)                                                 # promote: 1.23 s (load 3.1 -> 3.4)
    print(markdown_table(["system", "ndcg@10"], [["base", "0.6512"]]))

Servers are started by gates.serve_process (a new session, SIGTERM if this process dies, the whole group stopped),
the same code `embedgate serve` uses, so a benchmark never leaves a worker behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gates.serve_process import start_server, stop_server

HOST = "127.0.0.1"
S3_BUCKET = "bench"


def free_port() -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def load_text() -> str:
    """The 1, 5 and 15 minute load averages, for a line beside a number measured on shared cores."""
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# ---- a served process ----
# "tcp": the port accepts; "/path": GET answers 200; or a check of the base URL
Ready = str | Callable[[str], bool]


@dataclass
class Served:
    """A process serving on 127.0.0.1:`port`; `url` is its base URL."""

    argv: list[str]
    port: int
    env: dict[str, str]
    log_path: Path | None
    cwd: Path | None
    process: subprocess.Popen | None = None
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Served:
        # closed in stop()
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = start_server(
            self.argv, self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def wait_ready(self, ready: Ready = "tcp", timeout_s: float = 300.0) -> None:
        """Poll `ready` until it holds; a process that exits first, or a timeout, raises with the log's path."""
        check = ready if callable(ready) else _tcp_open if ready == "tcp" else _http_ok(ready)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[:4]} exited with {self.process.returncode}; see {self.log_path}"
                )
            with contextlib.suppress(OSError):
                if check(self.url):
                    return
            time.sleep(0.3)
        raise RuntimeError(
            f"{self.argv[:4]} not ready ({ready}) within {timeout_s:.0f} s; see {self.log_path}"
        )

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_server(self.process, drain_timeout_s)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()


@contextlib.contextmanager
def served(
    argv: Callable[[int], list[str]],
    *,
    ready: Ready = "tcp",
    env: dict[str, str] | None = None,
    port: int | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    timeout_s: float = 300.0,
    wait: bool = True,
) -> Iterator[Served]:
    """Start `argv(port)` (on a free port unless given), wait until `ready` holds (unless `wait=False`: several
    servers start together, then each `wait_ready`), and stop its process group on exit."""
    port = port or free_port()
    server = Served(argv(port), port, {**os.environ, **(env or {})}, log_path, cwd).start()
    try:
        if wait:
            server.wait_ready(ready, timeout_s)
        yield server
    finally:
        server.stop()


def _tcp_open(url: str) -> bool:
    host, port = url.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=1):
        return True


def _http_ok(path: str) -> Callable[[str], bool]:
    def check(url: str) -> bool:
        with urllib.request.urlopen(f"{url}{path}", timeout=2) as answer:
            return answer.status == 200

    return check


@contextlib.contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port with the bucket `bench` made; yields the AWS_* environment that reaches it
    (`make s3-test-server` builds moto; tests/service/s3_server.py says where it looks)."""
    from tests.service.s3_server import moto_server_executable

    with served(lambda port: [moto_server_executable(), "-H", HOST, "-p", str(port)], ready="tcp") as server:
        for _ in range(100):  # the port opens a moment before moto answers
            try:
                urllib.request.urlopen(urllib.request.Request(f"{server.url}/{S3_BUCKET}", method="PUT"))
                break
            except OSError:
                time.sleep(0.2)
        yield {
            "AWS_ENDPOINT_URL": server.url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }


# ---- data ----
@dataclass(frozen=True)
class BeirTexts:
    corpus: dict[str, str]  # doc id -> "title. text" (training.data.beir.IRDataset.doc_texts)
    queries: dict[str, str]  # query id -> text, in file order
    # split -> query id -> relevant doc ids (grade >= 1; queries the folder holds)
    qrels: dict[str, dict[str, set[str]]]


def load_beir_texts(folder: Path, splits: Sequence[str] | None = None) -> BeirTexts:
    """A BEIR folder (e.g. SciFact) read once by training.data.beir (its errors say what a folder must hold)."""
    from training.data.beir import load_beir

    data = load_beir(folder)
    queries = data.query_texts()
    qrels = {}
    for name in splits or data.splits:
        relevant = data.split(name).relevant()
        qrels[name] = {query: set(docs) for query, docs in relevant.items() if query in queries}
    return BeirTexts(data.doc_texts(), queries, qrels)


# ---- timing and tables ----
@dataclass
class Timing:
    label: str
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def __str__(self) -> str:
        return f"{self.label}: {self.seconds:.2f} s (load {self.load_before:.1f} -> {self.load_after:.1f})"


@contextlib.contextmanager
def timed(label: str = "") -> Iterator[Timing]:
    """Wall time of the block and the 1-minute load average before and after it."""
    took = Timing(label, load_before=os.getloadavg()[0])
    started = time.perf_counter()
    try:
        yield took
    finally:
        took.seconds = time.perf_counter() - started
        took.load_after = os.getloadavg()[0]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], left: int = 1) -> str:
    """A markdown table: the first `left` columns left-aligned (names), the rest right-aligned (numbers)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * left + "---:|" * (len(header) - left)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
