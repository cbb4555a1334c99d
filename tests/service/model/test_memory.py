"""Freed heap memory goes back to the OS after a large request (service/model/memory.py)."""

from __future__ import annotations

import sys

import psutil
import pytest

from service.model.memory import release_freed_memory


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="malloc_trim is glibc's; the service runs on Linux"
)
def test_freed_heap_memory_is_returned_to_the_os():
    process = psutil.Process()
    kept, freed = [], []
    for index in range(
        100_000
    ):  # ~100 MB in 1 KiB blocks (malloc, not pymalloc), 1% kept to fragment the heap
        freed.append(bytes(1024))
        if index % 100 == 0:
            kept.append(bytes(1024))
    del freed
    held = process.memory_info().rss
    assert release_freed_memory() is True
    returned = held - process.memory_info().rss
    assert returned > 50e6, f"only {returned / 1e6:.0f} MB returned"
    assert len(kept) == 1000
