"""ASGI middleware: the served model version on every response, BentoML's own routes (/metrics, /livez) included.

Routes that embed set the header themselves, to the version that computed the vectors (a hot swap may have
happened since); this only fills it in where it is missing, with the version serving now ("none" before the first
model loads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

VERSION_HEADER = "x-embedgate-model-version"
NO_MODEL = "none"
_HEADER_BYTES = VERSION_HEADER.encode("latin-1")


class ModelVersionHeader:
    def __init__(self, app: Any, current_version: Callable[[], str]) -> None:
        self.app = app
        self.current_version = current_version

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _HEADER_BYTES for name, _ in headers):
                    headers.append((_HEADER_BYTES, self.current_version().encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)
