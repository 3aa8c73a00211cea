"""The two things every decoder of untrusted bytes does first and last.

First it checks the byte count (empty or over the limit), so nothing is parsed at all.
Last, whatever the third-party codec raised is translated: Pillow and libsndfile raise a
zoo of exception types (OSError, SyntaxError, struct.error, ValueError, EOFError, …) for
malformed input, and none of them may escape to a front end, where they would be a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import InvalidInput, PayloadTooLarge, ServeError


def check_byte_count(data: bytes, *, limit: int, subject: str) -> None:
    """Reject empty bodies and bodies over ``limit`` bytes before anything parses them."""
    if not data:
        raise InvalidInput(f"{subject} is empty (0 bytes)")
    if len(data) > limit:
        raise PayloadTooLarge(f"{subject} is {len(data)} bytes; the limit is {limit} bytes")


@contextmanager
def translated_errors(subject: str, *, too_large: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn anything a codec raises inside the block into a :class:`ServeError`.

    ``ServeError`` passes through unchanged (the block's own checks). ``MemoryError`` and the
    ``too_large`` types become :class:`PayloadTooLarge`; every other exception means the
    bytes are malformed and becomes :class:`InvalidInput` naming ``subject``.
    """
    try:
        yield
    except ServeError:
        raise
    except MemoryError:
        raise PayloadTooLarge(f"{subject} needs more memory to decode than the server allows") from None
    except too_large as exc:
        raise PayloadTooLarge(f"{subject} is too large to decode safely: {exc}") from exc
    except Exception as exc:
        raise InvalidInput(f"{subject} is corrupt or truncated: {exc}") from exc
