"""Which registry class a location opens: a folder (a path or `file://` URL) or object storage (`s3://...`).

    Registry("registry")              # -> service.registry.registry.Registry on ./registry
    Registry("s3://bucket/models")    # -> service.registry.object_registry.ObjectRegistry (Registry.__new__ asks here)

Why a module of its own: ObjectRegistry extends the folder Registry, so registry.py importing object_registry.py
(to hand an `s3://` location to it) was a circle. The choice and the location rules live here instead, the
backends named by import path and imported when a location first asks for one (fsspec's known_implementations
work the same way), so registry.py imports this module and nothing imports registry.py back through it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from service.storage.object_store import is_object_url

FOLDER = "service.registry.registry:Registry"
OBJECT_STORAGE = "service.registry.object_registry:ObjectRegistry"


def local_path_of(location: str | Path) -> Path:
    """A local folder from a path or a `file://` URL."""
    text = str(location)
    return Path(text[len("file://") :]) if text.startswith("file://") else Path(location)


def backend_name(location: str | Path) -> str:
    """The import path of the class that opens `location` (object storage for any `scheme://` but `file://`)."""
    return OBJECT_STORAGE if is_object_url(location) else FOLDER


def backend_class(location: str | Path) -> type:
    """The registry class that opens `location`."""
    module, _, name = backend_name(location).partition(":")
    return getattr(importlib.import_module(module), name)
