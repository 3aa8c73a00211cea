"""The API key check both front ends share.

RFC 9110 §5.5: whitespace around a field value is not part of it, and HTTP parsers differ in
whether they strip it (httptools 0.9 does, older releases did not; h11 does). So the server
strips it itself, and ``Bearer KEY `` means the same whichever parser uvicorn runs.
"""

from __future__ import annotations

import hmac

_OWS = b" \t"


def bearer_credential(api_key: str) -> bytes:
    """The exact ``Authorization`` value a request must carry for ``api_key``."""
    return f"Bearer {api_key}".encode()


def offers_credential(offered: bytes | None, expected: bytes) -> bool:
    """Whether a field value, less optional whitespace, is ``expected``; the key compared in constant time.

    RFC 9110 §11.1 and §11.4: the scheme is case-insensitive (``bearer KEY`` and ``BEARER KEY`` are
    ``Bearer KEY``), and one or more spaces separate it from the credentials."""
    scheme, _, token = (offered or b"").strip(_OWS).partition(b" ")
    expected_scheme, _, expected_token = expected.partition(b" ")
    same_key = hmac.compare_digest(token.lstrip(b" "), expected_token)
    return same_key and scheme.lower() == expected_scheme.lower()
