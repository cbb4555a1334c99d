"""HTTP errors as one JSON shape: `{"error": {"message", "type", "code", "param"}}`, OpenAI's shape, so the
`openai` client raises the matching exception (BadRequestError, AuthenticationError, ...) with our message.

Status codes: 400 the body is not a readable JSON object; 401 missing/wrong API key; 404 unknown model or route;
405 wrong method; 413 body too large; 422 a readable request with invalid values; 429 too many requests in flight;
503 no model ready; 504 request timed out; 500 a bug (never for bad input; no traceback in the body).
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """A request that gets an error answer. `message` says what was expected, what arrived and how to fix it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                "code": self.code,
                "param": self.param,
            }
        }


def describe_value(value: Any) -> str:
    """A short, safe description of a JSON value for error messages: its JSON type and a clipped repr."""
    kind = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    if value is None:
        return kind
    text = repr(value)
    return f"{kind} ({text[:60]}{'...' if len(text) > 60 else ''})"
