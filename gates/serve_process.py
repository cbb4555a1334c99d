"""Start `bentoml serve` for the embedding service and stop all of it: the library behind `embedgate serve` and the
demo's served call.

    argv, env = serve_command(registry=Path("registry"), host="127.0.0.1", port=3000, api_key_env=None,
                              workers=1, precision=None, threads=None, poll_interval=None)
    code = run_until_stopped(argv, env, drain_timeout_s=30)     # blocks; SIGTERM/SIGINT drain and stop it

Why this exists: `bentoml serve` is an arbiter (circus) with worker processes under it. Killing only the process we
started left the arbiter's workers re-parented and still serving on the port. So the server runs in its own
process group (its own session), every stop signal is forwarded to that whole group, and whatever is left of the
group after the drain is killed. If this process is itself killed (SIGKILL cannot be caught), the kernel sends the
arbiter SIGTERM (PR_SET_PDEATHSIG), and the arbiter stops its workers.

Why the server starts as `python -m gates.serve_process serve ...` rather than `python -m bentoml serve ...`:
BentoML 1.4 gives every server on a host the same Prometheus multiprocess folder, `$BENTOML_HOME/
prometheus_multiproc_dir` (`ensure_prometheus_dir`), wipes it whenever one starts, and overrides any
PROMETHEUS_MULTIPROC_DIR in its workers' environment. Two replicas on one host then summed each other's counters
in /metrics, and each start reset the others'. `bentoml_with_own_metrics_dir` runs the same `bentoml` command
line with a folder of its own (a fresh temporary folder, removed when the server exits), so each replica's
/metrics counts its own workers and nobody else's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVICE = "service.app:EmbedgateService"
# Split mode (`http_workers`): HTTP workers apart from one model process (service/split/app.py, docs/serving.md).
SPLIT_SERVICE = "service.split.app:EmbedgateHttp"
# How the server is started: `bentoml_with_own_metrics_dir` below runs `bentoml` with a metrics folder of its own.
LAUNCHER = [sys.executable, "-m", "gates.serve_process"]
METRICS_DIR_PREFIX = "embedgate-metrics-"
# After the drain timeout, the workers cancel what is left; this much more and the group is killed outright.
KILL_MARGIN_S = 10.0
_PR_SET_PDEATHSIG = 1


def serve_command(
    *,
    registry: str | Path | None,
    host: str,
    port: int,
    api_key_env: str | None,
    workers: int,
    precision: str | None,
    threads: int | None,
    poll_interval: float | None,
    environ: dict[str, str] | None = None,
    http_workers: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command line and its environment, settings checked first (SettingsError names them).
    `http_workers`: split mode, that many HTTP worker processes in front of one model process (None: one process
    does both, the default)."""
    from service.settings import ServeSettings, SettingsError

    if http_workers is not None and (http_workers < 1 or workers != 1):
        raise SettingsError(
            f"--http-workers {http_workers} with --workers {workers}: split mode runs one model process and "
            f"N >= 1 HTTP workers; drop --workers (or set it to 1), or drop --http-workers for {workers} "
            f"single-process workers"
        )

    env = dict(os.environ if environ is None else environ)
    if registry is not None:
        env["EMBEDGATE_REGISTRY"] = str(registry) if "://" in str(registry) else str(Path(registry).resolve())
    if api_key_env is not None:
        key = env.get(api_key_env, "").strip()
        if not key:
            raise SettingsError(
                f"--api-key-env {api_key_env}: that environment variable is unset or empty; "
                f"export it first (export {api_key_env}=...) or drop --api-key-env"
            )
        env["EMBEDGATE_API_KEY"] = key
    if precision is not None:
        env["EMBEDGATE_PRECISION"] = precision
    if poll_interval is not None:
        env["EMBEDGATE_POLL_INTERVAL_S"] = str(poll_interval)
    if threads is not None:
        env["EMBEDGATE_THREADS"] = str(threads)
    elif workers > 1 and not env.get("EMBEDGATE_THREADS"):
        # Each worker runs its own onnxruntime session: share the cores instead of oversubscribing them.
        env["EMBEDGATE_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    options = env.get("BENTOML_CONFIG_OPTIONS", "")
    if http_workers is None:
        env["BENTOML_CONFIG_OPTIONS"] = f"{options} services.embedgate.workers={workers}".strip()
    else:
        env["BENTOML_CONFIG_OPTIONS"] = f"{options} services.embedgate_http.workers={http_workers}".strip()
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    settings = ServeSettings.from_env(env)  # fail here, with the variable named, rather than in every worker
    argv = [
        *LAUNCHER,
        "serve",
        SERVICE if http_workers is None else SPLIT_SERVICE,
        "--host",
        host,
        "--port",
        str(port),
        # BentoML's (hidden) uvicorn options: how long a stopping worker lets in-flight requests finish.
        "--timeout-graceful-shutdown",
        str(drain_seconds(settings.drain_timeout_s)),
    ]
    return argv, env


def drain_seconds(drain_timeout_s: float) -> int:
    """uvicorn takes whole seconds; never round a short drain down to zero (that would mean no drain at all)."""
    return max(1, round(drain_timeout_s))


def start_server(argv: list[str], env: dict[str, str], **popen_kwargs) -> subprocess.Popen:
    """`argv` in a new session (its own process group), set to receive SIGTERM if this process dies."""
    parent = os.getpid()
    return subprocess.Popen(
        argv,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: _terminate_with_parent(parent),
        **popen_kwargs,
    )


def stop_server(process: subprocess.Popen, drain_timeout_s: float, sig: int = signal.SIGTERM) -> int:
    """Send `sig` to the server's whole process group, wait for the drain, then kill whatever is left of the group.
    Returns the server's exit code."""
    _signal_group(process.pid, sig)
    try:
        code = process.wait(timeout=drain_seconds(drain_timeout_s) + KILL_MARGIN_S)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        code = process.wait()
    reap_group(process.pid)
    return code


def reap_group(pgid: int, wait_s: float = 5.0) -> None:
    """Wait up to `wait_s` for the group's last members (workers finishing their drain), then SIGKILL them."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def run_until_stopped(argv: list[str], env: dict[str, str], drain_timeout_s: float) -> int:
    """Run the server in the foreground until it exits or this process gets SIGTERM/SIGINT/SIGHUP; then drain and
    stop the whole process group. Returns 0 after a requested, completed stop, else the server's exit code."""
    process = start_server(argv, env)
    requested: list[int] = []

    def forward(signum: int, _frame) -> None:
        requested.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        while process.poll() is None and not requested:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.2)
        if requested:
            # Always SIGTERM to the group: a SIGINT would make uvicorn skip the graceful drain on a second signal.
            stop_server(process, drain_timeout_s, signal.SIGTERM)
            return 0
        code = process.returncode
        reap_group(process.pid, wait_s=0)  # the arbiter died on its own: leave no worker behind
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminate_with_parent(parent: int) -> None:
    """In the child, before exec: ask the kernel for SIGTERM when the parent dies (Linux; a no-op elsewhere). If the
    parent died before the request took effect, nobody would send it: stop now instead."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def bentoml_with_own_metrics_dir(args: list[str]) -> None:
    """The server process's entry point (`python -m gates.serve_process ARGS`): the `bentoml` command line `args`
    with a Prometheus multiprocess folder of its own instead of the one every BentoML server on this host shares
    (module docstring). Exits as bentoml does (click's SystemExit), after removing the folder."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    folder = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    # What `ensure_prometheus_dir` reads; bentoml passes the folder to its workers as PROMETHEUS_MULTIPROC_DIR.
    BentoMLContainer.prometheus_multiproc_dir.set(folder)
    try:
        cli.main(args=args, prog_name="bentoml")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    bentoml_with_own_metrics_dir(sys.argv[1:])
