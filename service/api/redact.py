"""Keep server file-system paths out of what clients see.

Error messages inside the service are written for the operator's log and name files by their full path (a refused
version, a missing registry). A client gets the same message with every absolute path cut to its last component:
`/srv/models/registry/versions/v0004/onnx/model.onnx` -> `.../model.onnx`, enough to say which file, nothing about
the machine's layout.
"""

from __future__ import annotations

import re
from typing import Any

# An absolute POSIX path: a slash that does not follow a word character, a dot or a slash (so "a/b", "./x" and a
# URL's "//host" are left alone), then one or more segments up to whitespace or punctuation.
_ABSOLUTE_PATH = re.compile(r"(?<![\w./])(?:/[^\s/'\"`,;:()\[\]{}]+)+/?")


def hide_paths(text: str) -> str:
    """`text` with each absolute path replaced by `.../<last component>`."""

    def shorten(match: re.Match[str]) -> str:
        parts = [part for part in match.group(0).split("/") if part]
        return f".../{parts[-1]}" if parts else match.group(0)

    return _ABSOLUTE_PATH.sub(shorten, text)


def hide_paths_in(value: Any) -> Any:
    """`hide_paths` applied to every string inside a JSON-like value (dicts, lists, tuples)."""
    if isinstance(value, str):
        return hide_paths(value)
    if isinstance(value, dict):
        return {key: hide_paths_in(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_paths_in(item) for item in value]
    return value
