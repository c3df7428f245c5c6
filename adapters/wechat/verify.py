"""Signature and timestamp checks of WeChat / WeCom callbacks (query parameters).

* ``signature`` = sha1(sorted(token, timestamp, nonce)) - OA plain mode and GET check.
* ``msg_signature`` = sha1(sorted(token, timestamp, nonce, Encrypt or echostr)) -
  safe mode and every WeCom request.

Both are compared in constant time. ``timestamp`` must lie within the window
around the adapter's clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

from ...router.exceptions import Unauthorized

__all__ = ["check_timestamp", "sha1_signature", "verify_signature"]


def sha1_signature(*parts: str) -> str:
    """Hex sha1 of the parts sorted and concatenated (WeChat's signature scheme)."""
    return hashlib.sha1("".join(sorted(parts)).encode(), usedforsecurity=False).hexdigest()


def verify_signature(signature: str | None, *parts: str, name: str = "signature") -> None:
    """Raise Unauthorized unless ``signature`` matches the parts."""
    if not signature:
        raise Unauthorized(f"missing query parameter {name!r}", reason="missing_signature")
    expected = sha1_signature(*parts)
    if not hmac.compare_digest(signature.lower().encode(), expected.encode()):
        raise Unauthorized(f"{name} does not match (check the token)", reason="bad_signature")


def check_timestamp(raw: str | None, now_s: float, window_s: float) -> str:
    """Return ``raw`` if it is unix seconds within ``window_s`` of now, else raise."""
    if not raw or len(raw) > 12 or not raw.isascii() or not raw.isdigit():
        raise Unauthorized(
            f"timestamp must be unix seconds, got {(raw or '')[:16]!r}", reason="bad_timestamp"
        )
    skew = abs(now_s - int(raw))
    if skew > window_s:
        raise Unauthorized(
            f"timestamp is {skew:.0f} s away from now; the window is {window_s:.0f} s "
            "(replayed request, or check the server clock)",
            reason="stale_timestamp",
        )
    return raw
