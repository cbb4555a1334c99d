"""Each pipeline stage's cost: wall, CPU and peak RSS, with child processes counted, recorded for passed, blocked
and failed stages alike."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from gates.pipeline.stage_cost import measure
from gates.pipeline.stage_runner import StageBlocked, Stages

MB = 2**20


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / MB


def test_peak_rss_sees_an_allocation_freed_before_the_stage_ends():
    # Held for several sampling intervals: after a long test session the process's kernel high-water mark is
    # already above this allocation, so the peak comes from the sampler, which must catch it while it lives.
    before = _rss_mb()
    with measure(interval=0.02) as cost:
        block = np.ones(300 * MB // 8)  # touched, so resident
        time.sleep(0.3)
        del block
    assert cost.peak_rss_mb >= before + 250, (before, cost)
    assert _rss_mb() < before + 100  # freed: only the peak remembers it


def test_cpu_and_wall_seconds_of_busy_work():
    with measure() as cost:
        # this thread's CPU time: other threads of the process (left by earlier tests) must not shorten the loop,
        # and a busy neighbour only stretches the wall
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
    assert cost.cpu_s >= 0.3 and cost.wall_s >= 0.3, cost


def test_a_child_process_memory_counts():
    code = (
        "import numpy as np, time; a = np.ones(300 * 2**20 // 8); print('ready', flush=True); time.sleep(1)"
    )
    before = _rss_mb()
    with measure(interval=0.05) as cost:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        child.wait()
    assert cost.peak_rss_mb >= before + 250, (before, cost)


def _held_for_samples() -> float:
    """200 MB resident for a few of the sampler's intervals (the kernel's high-water mark may already be higher)."""
    block = np.ones(200 * MB // 8)
    time.sleep(0.35)
    return float(block.sum())


def test_stage_records_carry_the_cost_whatever_the_outcome():
    lines = []
    stages = Stages(lines.append)
    assert stages.run("fine", _held_for_samples) > 0
    with pytest.raises(StageBlocked):
        stages.run("blocked", lambda: (_ for _ in ()).throw(StageBlocked("no")))
    with pytest.raises(ValueError, match="bad"):
        stages.run("broken", lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert [(r.name, r.status) for r in stages.records] == [
        ("fine", "passed"),
        ("blocked", "blocked"),
        ("broken", "error"),
    ]
    assert all(r.cpu_seconds is not None and r.peak_rss_mb > 0 for r in stages.records)
    assert stages.records[0].peak_rss_mb >= 150 and stages.records[2].detail == {"error": "ValueError: bad"}
    assert "[fine] passed in" in lines[1] and "peak RSS" in lines[1]


def test_memory_a_stage_freed_goes_back_to_the_system():
    from gates.pipeline.stage_cost import release_memory

    keep, big = [], []
    for _ in range(3000):  # heap-sized blocks between small survivors: glibc keeps such pages after free
        big.append(np.ones(64 * 1024 // 8))
        keep.append(np.ones(16))
    held = _rss_mb()
    del big
    release_memory()
    assert _rss_mb() < held - 100, (held, _rss_mb())
