"""uvicorn's HTTP/1.1 protocol (h11) with the limits a server facing untrusted clients needs, all answered in JSON.

    EMBEDGATE_MAX_HEADER_BYTES=16384 EMBEDGATE_HEADER_TIMEOUT_S=10 EMBEDGATE_KEEP_ALIVE_TIMEOUT_S=5 \
    EMBEDGATE_MAX_CONNECTIONS=512 bentoml serve service.app:EmbedgateService

| limit | uvicorn by itself | here |
|---|---|---|
| header size | httptools (the default parser): none; h11: `h11_max_incomplete_event_size`, only while incomplete | request line + headers over `max_header_bytes` -> 431, closed |
| header read time | none: one byte per second keeps a connection forever | headers not complete `header_timeout_s` after their first byte -> 408, closed |
| idle connection | `timeout_keep_alive`, armed only after a response | also armed when a connection opens, so a silent one closes too |
| connections | `limit_concurrency` answers a plain-text 503 and keeps the socket | over `max_connections` per worker -> 503 JSON, closed at once |
| malformed HTTP | plain-text 400 | JSON 400 (`malformed_http`) |

Why hand-written: BentoML 1.4 starts uvicorn itself and passes only `--timeout-keep-alive` and
`--timeout-graceful-shutdown` through (bentoml serve's hidden options), not `http`, `h11_max_incomplete_event_size`
or `limit_concurrency`; and uvicorn has no header read timeout at all. uvicorn takes its protocol class by name from
`uvicorn.config.HTTP_PROTOCOLS`, so `install()` (called when BentoML imports service/app.py in the worker, before
uvicorn is configured) points "auto" at this class. h11 instead of httptools costs some parsing speed per request,
small beside a model run.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.api.errors import ApiError
from service.api.response_bodies import dumps

_END_OF_HEADERS = b"\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int


@functools.lru_cache(maxsize=1)
def connection_limits() -> ConnectionLimits:
    """The limits from the EMBEDGATE_* settings of this process (read once)."""
    from service.settings import ServeSettings

    settings = ServeSettings.from_env()
    return ConnectionLimits(
        settings.max_header_bytes,
        settings.header_timeout_s,
        settings.keep_alive_timeout_s,
        settings.max_connections,
    )


def install() -> None:
    """Make uvicorn's default ("auto") HTTP protocol this one, in this process."""
    from uvicorn import config

    config.HTTP_PROTOCOLS["auto"] = f"{__name__}:{GuardedH11Protocol.__name__}"


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = connection_limits()
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # request line + headers received so far for the request being read
        self._tail = b""  # the last bytes seen, to find an end of headers split across two reads

    # ---- connection cap and idle connections ----
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                503,
                "too_many_connections",
                f"this worker already holds {len(self.connections) - 1} "
                f"connections, the limit is {self.limits.max_connections} (EMBEDGATE_MAX_CONNECTIONS); "
                f"retry shortly, or reuse a keep-alive connection",
            )
            return
        # uvicorn arms its idle timer only after a response: a connection that never sends would stay forever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    # ---- header size and header read time ----
    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # reading a request line and headers
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._header_timed_out
                )
            seen = self._tail + data
            end = seen.find(_END_OF_HEADERS)
            self._header_bytes += (end - len(self._tail)) if end >= 0 else len(data)
            self._tail = seen[-3:]
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(431, "request_header_too_large", self._too_large_message())
                return
        super().data_received(data)
        if (
            self.conn.their_state is not h11.IDLE
        ):  # headers complete (or the connection failed): a new request
            self._stop_header_timer()
            self._header_bytes, self._tail = 0, b""

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._refuse(
                408,
                "request_timeout",
                f"the request headers were not complete within "
                f"{self.limits.header_timeout_s:g} s (EMBEDGATE_HEADER_TIMEOUT_S); send the whole header "
                f"block at once",
            )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_large_message(self) -> str:
        return (
            f"the request line and headers are over {self.limits.max_header_bytes} bytes "
            f"(EMBEDGATE_MAX_HEADER_BYTES); send the texts in the body, not in headers or the URL"
        )

    # ---- JSON for what uvicorn answers in plain text ----
    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.limits.max_header_bytes:  # h11's own limit tripped
            self._refuse(431, "request_header_too_large", self._too_large_message())
        else:
            self._refuse(
                400,
                "malformed_http",
                "the request is not valid HTTP/1.1 (request line, method, header "
                "syntax or framing); send a well-formed request, e.g. with an HTTP client library",
            )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer with our JSON error and close the connection (raw bytes: h11 may be in no state to send)."""
        self._stop_header_timer()
        self._unset_keepalive_if_required()
        if self.transport.is_closing():
            return
        body = dumps(ApiError(status, code, message).body())
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode("latin-1")
        self.transport.write(head + body)
        self.transport.close()
