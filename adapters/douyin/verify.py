"""Douyin push signature and header checks.

``x-signature`` = base64(md5("k=v" pairs of the signed headers, sorted by name,
joined by "&" + raw body + secret)). The signed headers are exactly
``x-msg-type``, ``x-nonce-str``, ``x-roomid`` and ``x-timestamp`` (Douyin's
reference implementation signs these four): other ``x-*`` headers that proxies
add (``X-Forwarded-For``, ``X-Request-Id``) must not break verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import SecretStr

from ...router.exceptions import BadRequest, Unauthorized
from ..wechat.verify import check_timestamp

__all__ = ["SIGNED_HEADERS", "PushHeaders", "sign", "verify_push"]

SIGNED_HEADERS: Final = ("x-msg-type", "x-nonce-str", "x-roomid", "x-timestamp")
_ROOM_ID: Final = re.compile(r"[A-Za-z0-9_\-]{1,64}")


@dataclass(frozen=True, slots=True)
class PushHeaders:
    """The verified headers of one push."""

    room_id: str
    msg_type: str
    timestamp_s: int


def sign(headers: Mapping[str, str], body: bytes, secret: str) -> str:
    """The ``x-signature`` Douyin sends for these headers and body."""
    pairs = "&".join(f"{k}={headers.get(k, '')}" for k in sorted(SIGNED_HEADERS))
    digest = hashlib.md5(pairs.encode() + body + secret.encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def _timestamp_s(raw: str) -> str:
    """x-timestamp in seconds (Douyin sends milliseconds; seconds are accepted too)."""
    if raw.isascii() and raw.isdigit() and len(raw) >= 12:
        return raw[:-3]
    return raw


def verify_push(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, SecretStr],
    now_s: float,
    window_s: float,
) -> PushHeaders:
    """Check the message type, timestamp and signature of a push; return its headers.

    Raises:
        BadRequest: unknown message type or malformed room id.
        Unauthorized: missing/wrong signature, stale timestamp, no secret configured.
    """
    msg_type = headers.get("x-msg-type", "")
    if msg_type not in ("live_comment", "live_gift", "live_like", "live_fansclub"):
        raise BadRequest(f"x-msg-type {msg_type[:32]!r} is not a known live push type",
                         reason="unknown_msg_type")
    secret = secrets.get(msg_type)
    if secret is None:
        raise Unauthorized(f"no push secret configured for {msg_type}",
                           reason="auth_not_configured")
    room = headers.get("x-roomid", "")
    if not _ROOM_ID.fullmatch(room):
        raise BadRequest("x-roomid must be 1-64 letters, digits, '-' or '_'", reason="invalid")
    ts = check_timestamp(_timestamp_s(headers.get("x-timestamp", "")), now_s, window_s)
    signature = headers.get("x-signature", "")
    if not signature:
        raise Unauthorized("missing x-signature header", reason="missing_signature")
    expected = sign(headers, body, secret.get_secret_value())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise Unauthorized("x-signature does not match (check the secret of this message type)",
                           reason="bad_signature")
    return PushHeaders(room, msg_type, int(ts))
