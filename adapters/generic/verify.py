"""Authentication of ``POST /v1/messages``: a bearer token, or an HMAC-SHA256 signature."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from ...router.exceptions import Unauthorized
from ...router.settings import Settings
from .config import HMAC_SIGNATURE_HEADER, HMAC_TIMESTAMP_HEADER

__all__ = ["sign", "verify_request"]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of ``X-Omni-Signature`` for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_request(
    headers: Mapping[str, str], body: bytes, settings: Settings, now_s: float
) -> str:
    """Return the method that authenticated the request, or raise Unauthorized."""
    tokens = settings.ingest_tokens
    secret = settings.ingest_hmac_secret
    if not tokens and secret is None:
        raise Unauthorized(
            "ingest authentication is not configured: set OMNI_INGEST_TOKENS or "
            "OMNI_INGEST_HMAC_SECRET",
            reason="auth_not_configured",
        )
    auth = headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization must be 'Bearer <token>'", reason="bad_auth_header")
        if any(hmac.compare_digest(token.encode(), t.get_secret_value().encode()) for t in tokens):
            return "bearer"
        raise Unauthorized("unknown bearer token", reason="bad_token")
    signature = headers.get(HMAC_SIGNATURE_HEADER)
    if signature is None or secret is None:
        raise Unauthorized(
            f"send 'Authorization: Bearer <token>' or the {HMAC_SIGNATURE_HEADER} and "
            f"{HMAC_TIMESTAMP_HEADER} headers",
            reason="missing_auth",
        )
    raw_ts = headers.get(HMAC_TIMESTAMP_HEADER, "")
    try:
        ts = int(raw_ts)
    except ValueError:
        raise Unauthorized(
            f"{HMAC_TIMESTAMP_HEADER} must be unix seconds, got {raw_ts[:32]!r}",
            reason="bad_timestamp",
        ) from None
    if abs(now_s - ts) > settings.hmac_window_s:
        raise Unauthorized(
            f"{HMAC_TIMESTAMP_HEADER} is {abs(now_s - ts):.0f} s away from now; the window is "
            f"{settings.hmac_window_s:.0f} s (check the sender's clock)",
            reason="stale_timestamp",
        )
    expected = sign(secret.get_secret_value(), ts, body)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise Unauthorized("signature does not match the body", reason="bad_signature")
    return "hmac"
