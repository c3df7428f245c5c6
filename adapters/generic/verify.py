"""Authentication of ``POST /v1/messages``: a bearer token, or an HMAC-SHA256 signature.

Two guarantees beyond "the credential is valid":

- **Whose ids.** :class:`Credential.source` names the credential that sent a request
  (``bearer:<fingerprint>`` or ``hmac:<fingerprint>``; a fingerprint is a hash of the
  secret, never the secret). The envelope ids and conversation ids of the generic API
  live in that namespace (``router.models.message_id(..., source=...)``,
  ``parse.conversation_id``), so no caller can claim the id or the conversation of a
  real WeChat message, nor another caller's.
- **Each signature once.** :class:`ReplayGuard` remembers every accepted
  ``X-Omni-Signature`` in Redis (``SET NX``) for as long as its timestamp is inside
  the window; a repeat is refused with 409 ``replayed_signature``. If the request is
  not accepted after all (the broker did not acknowledge: 503), the mark is released,
  so the sender's retry of the same bytes goes through.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ...router.exceptions import RequestRejected, Unauthorized
from ...router.keys import Keys
from ...router.settings import Settings
from .config import HMAC_SIGNATURE_HEADER, HMAC_TIMESTAMP_HEADER

__all__ = [
    "Credential",
    "ReplayCheckUnavailable",
    "ReplayGuard",
    "ReplayedRequest",
    "fingerprint",
    "sign",
    "verify_request",
]

log = logging.getLogger(__name__)


class ReplayedRequest(RequestRejected):
    """The same signed request (same ``X-Omni-Signature``) came before, inside the window."""

    status = 409
    reason = "replayed_signature"


class ReplayCheckUnavailable(RequestRejected):
    """Redis did not answer, so a signature cannot be checked for a replay: retry."""

    status = 503
    reason = "replay_check_unavailable"


def fingerprint(secret: str) -> str:
    """A stable, non-secret name of a credential: 16 hex digits of a SHA-256 of it."""
    return hashlib.sha256(b"omniroute-ingest-credential\x00" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Credential:
    """The credential that authenticated a request."""

    method: Literal["bearer", "hmac"]
    fingerprint: str
    signature: str | None = None  # HMAC only: the X-Omni-Signature value
    timestamp: int | None = None  # HMAC only: X-Omni-Timestamp

    @property
    def source(self) -> str:
        """The id namespace of this credential's messages (``message_id(source=...)``)."""
        return f"{self.method}:{self.fingerprint}"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of ``X-Omni-Signature`` for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_request(
    headers: Mapping[str, str], body: bytes, settings: Settings, now_s: float
) -> Credential:
    """Return the credential that authenticated the request, or raise Unauthorized."""
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
        for t in tokens:
            value = t.get_secret_value()
            if hmac.compare_digest(token.encode(), value.encode()):
                return Credential("bearer", fingerprint(value))
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
    return Credential("hmac", fingerprint(secret.get_secret_value()), expected, ts)


class ReplayGuard:
    """Each signed request is accepted once: ``SET NX`` of its signature, with a TTL that
    lasts until its timestamp leaves the window (then the window refuses it anyway).

    Args:
        redis: The shared asyncio client; None (an app without Redis, tests only)
            disables the guard.
        keys: The key builder.
        window_s: ``OMNI_HMAC_WINDOW_S``.
    """

    def __init__(self, redis: Redis | None, keys: Keys, window_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._window_s = window_s

    def _key(self, cred: Credential) -> str | None:
        if cred.signature is None or self._redis is None:
            return None
        return self._keys.ingest_signature(cred.signature.removeprefix("sha256="))

    async def claim(self, cred: Credential, now_s: float) -> None:
        """Remember a signed request; bearer requests pass untouched.

        Raises:
            ReplayedRequest: this signature was claimed before and is still remembered.
            ReplayCheckUnavailable: Redis did not answer (refused rather than risk a replay).
        """
        key = self._key(cred)
        if key is None or self._redis is None or cred.timestamp is None:
            return
        ttl_s = max(1, math.ceil(cred.timestamp + self._window_s - now_s) + 1)
        try:
            fresh = await self._redis.set(key, b"1", nx=True, ex=ttl_s)
        except (RedisError, OSError) as exc:
            log.warning("ingest: replay check unavailable (%r)", exc)
            raise ReplayCheckUnavailable(
                "cannot check the signature for a replay right now (Redis); retry"
            ) from None
        if not fresh:
            raise ReplayedRequest(
                f"this signed request was already received (same {HMAC_SIGNATURE_HEADER} "
                f"within the {self._window_s:.0f} s window); if it was accepted, it is in. "
                "Sign each new request with a new timestamp"
            )

    async def release(self, cred: Credential) -> None:
        """Forget a claim whose request was not accepted (503), so its retry goes through."""
        key = self._key(cred)
        if key is None or self._redis is None:
            return
        try:
            await self._redis.delete(key)
        except (RedisError, OSError) as exc:
            log.warning("ingest: could not release a signature claim (%r)", exc)
