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
    """Whether a field value, less optional whitespace, is ``expected``; constant time."""
    return hmac.compare_digest((offered or b"").strip(_OWS), expected)
