"""Optional API key: `Authorization: Bearer <key>`, compared in constant time.

Nothing from the header is ever echoed or logged: a client that writes `Authorization: <key>` (no scheme) would
otherwise see its key in the error message or the server log.
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from service.api.errors import ApiError

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="embedgate"'}


def check_api_key(authorization: str | None, expected: SecretStr | None) -> None:
    """Return when no key is configured or the header carries it; else ApiError(401)."""
    if expected is None:
        return
    if not authorization:
        raise ApiError(
            401,
            "missing_api_key",
            "this service requires an API key: send the header `Authorization: Bearer <key>`",
            headers=CHALLENGE,
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "invalid_authorization_header",
            "the Authorization header is not of the form `Bearer <key>`; send `Authorization: Bearer <key>`",
            headers=CHALLENGE,
        )
    # compare_digest takes time independent of where the strings differ, so the key cannot be guessed by timing.
    if not hmac.compare_digest(token.strip().encode("utf-8"), expected.get_secret_value().encode("utf-8")):
        raise ApiError(
            401,
            "invalid_api_key",
            "the API key is not valid; check the key sent in `Authorization: Bearer <key>`",
            headers=CHALLENGE,
        )
