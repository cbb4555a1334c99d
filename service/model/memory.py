"""Give freed heap memory back to the operating system after a large request.

A large request (tens of 30k-character texts) makes tokenizers and numpy allocate hundreds of MB that are freed
when it ends, but glibc keeps freed memory in its arenas, so the worker's RSS stays at its peak. `malloc_trim(0)`
returns what is free (measured on MiniLM, 66 x 30k characters: -65 MB of the +350 MB; onnxruntime's CPU memory
arena keeps the rest: with that arena off as well, RSS went back to its level before the request; see
docs/serving.md, "Memory"). Linux/glibc only; elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import logging

logger = logging.getLogger("embedgate.service")
# Requests with fewer characters than this leave too little behind to be worth a trim (which takes a few ms).
TRIM_AFTER_CHARS = 64 * 1024


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None


def release_freed_memory() -> bool:
    """Ask glibc to return free heap pages to the OS; True when it could (run it off the event loop)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except Exception:  # never let housekeeping fail a request
        logger.exception("malloc_trim failed")
        return False
