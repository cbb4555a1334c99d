"""Start the service on a registry's champion, call it once through the official `openai` client, stop it.

The last step of `embedgate demo`: it shows the path ends in an endpoint a client can use, and what the client
gets back (shape, unit norm, the model version header). The demo's texts are queries, so it asks for the
`embedgate-embedder:query` model: a prompted champion (e5, bge style) embeds them with its query prompt, as a plain
openai client can only ask through the model name (docs/serving.md, "Query and document prompts").
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gates.errors import EmbedgateGateError


@dataclass(frozen=True)
class ServedCall:
    url: str
    model_version: str  # the x-embedgate-model-version header
    model: str  # the response's `model` field
    vectors: int
    dimensions: int
    norms: tuple[float, ...]
    prompt_tokens: int
    seconds_to_ready: float
    # the same texts asked for as `champion@<old>` (clients that stored an older version's vectors), when the
    # champion also answers in older versions' spaces: (the name asked, the version header that answered)
    spaces: tuple[tuple[str, str], ...] = ()

    def summary(self) -> str:
        norms = ", ".join(f"{n:.4f}" for n in self.norms)
        return (
            f"POST {self.url}/v1/embeddings (openai client): {self.vectors} vectors x {self.dimensions} dims, "
            f"norms [{norms}], {self.prompt_tokens} prompt tokens, model {self.model}, "
            f"x-embedgate-model-version: {self.model_version} (ready after {self.seconds_to_ready:.1f}s)"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call_served_champion(
    registry: Path,
    texts: list[str],
    dimensions: int | None = None,
    startup_timeout_s: float = 180.0,
    log_path: Path | None = None,
    role: str | None = "query",
    spaces: tuple[str, ...] = (),
) -> ServedCall:
    """`role`: what the texts are ("query" | "document"; None: no prompt), sent as the model name's suffix.
    `spaces`: older versions whose space to ask in as well (`champion@v0001`), on the same server."""
    import httpx
    from openai import OpenAI

    from gates import serve_process

    port = _free_port()
    argv, env = serve_process.serve_command(
        registry=registry,
        host="127.0.0.1",
        port=port,
        api_key_env=None,
        workers=1,
        precision=None,
        threads=None,
        poll_interval=None,
    )
    env["EMBEDGATE_DRIFT_SAMPLE_RATE"] = env.get("EMBEDGATE_DRIFT_SAMPLE_RATE", "0")
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        process = serve_process.start_server(argv, env, stdout=log, stderr=subprocess.STDOUT)
    except BaseException:
        if log_path:
            log.close()
        raise
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    try:
        while True:
            if process.poll() is not None:
                raise EmbedgateGateError(
                    f"the service exited with code {process.returncode} before it was ready"
                    + (f"; see {log_path}" if log_path else "")
                )
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > startup_timeout_s:
                raise EmbedgateGateError(
                    f"the service was not ready after {startup_timeout_s:.0f}s"
                    + (f"; see {log_path}" if log_path else "")
                )
            time.sleep(0.5)
        ready = time.perf_counter() - started
        client = OpenAI(base_url=f"{url}/v1", api_key=os.environ.get("EMBEDGATE_API_KEY", "not-needed"))
        kwargs = {"dimensions": dimensions} if dimensions else {}
        model = "embedgate-embedder" + (f":{role}" if role else "")
        raw = client.embeddings.with_raw_response.create(model=model, input=texts, **kwargs)
        result = raw.parse()
        import numpy as np

        vectors = np.array([item.embedding for item in result.data], dtype=np.float32)
        answered = []
        for space in spaces:
            name = f"embedgate-embedder:champion@{space}" + (f":{role}" if role else "")
            in_space = client.embeddings.with_raw_response.create(model=name, input=texts)
            answered.append((name, in_space.headers.get("x-embedgate-model-version", "?")))
        return ServedCall(
            url,
            raw.headers.get("x-embedgate-model-version", "?"),
            result.model,
            vectors.shape[0],
            vectors.shape[1],
            tuple(float(n) for n in np.linalg.norm(vectors, axis=1)),
            result.usage.prompt_tokens,
            ready,
            tuple(answered),
        )
    finally:
        # The whole process group, drained then killed if need be; a group that is gone already (the service
        # exited before it was ready) raises nothing that would replace the error being raised.
        serve_process.stop_server(process, drain_timeout_s=5)
        if log_path:
            log.close()
