"""Authentication of phone webhooks.

Twilio: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, full URL + the
POST parameters sorted by name, each name immediately followed by its value)).
The URL is the one Twilio called: behind a proxy set ``OMNI_PHONE_PUBLIC_BASE_URL``.

TCCC: the data push supports no authentication, HTTP basicAuth, or OAuth 2.0
client credentials (TCCC "数据推送前置说明"). We require basicAuth
(``OMNI_TCCC_USERNAME`` / ``OMNI_TCCC_PASSWORD``): nothing unauthenticated is produced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from ...router.exceptions import Unauthorized
from ...router.settings import PhoneSettings
from .config import TWILIO_SIGNATURE_HEADER

__all__ = ["twilio_signature", "url_variants", "verify_tccc", "verify_twilio"]


def twilio_signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a form POST to ``url``.

    Repeated names are sorted by value too, as Twilio's own validator does.
    """
    by_name: dict[str, set[str]] = {}
    for name, value in params:
        by_name.setdefault(name, set()).add(value)
    payload = url + "".join(
        name + value for name in sorted(by_name) for value in sorted(by_name[name])
    )
    mac = hmac.new(auth_token.encode(), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def url_variants(url: str) -> list[str]:
    """``url`` as signed with and without the default port (Twilio signs either)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    variants = [url]
    if parts.port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


def verify_twilio(
    headers: Mapping[str, str],
    url: str,
    params: list[tuple[str, str]],
    settings: PhoneSettings,
) -> None:
    """Raise Unauthorized unless the request carries a valid Twilio signature for ``url``."""
    token = settings.twilio_auth_token
    if token is None or not token.get_secret_value():
        raise Unauthorized(
            "Twilio webhooks are not configured: set OMNI_TWILIO_AUTH_TOKEN",
            reason="auth_not_configured",
        )
    signature = headers.get(TWILIO_SIGNATURE_HEADER)
    if not signature:
        raise Unauthorized(f"missing {TWILIO_SIGNATURE_HEADER} header", reason="missing_signature")
    secret = token.get_secret_value()
    for candidate in url_variants(url):
        expected = twilio_signature(candidate, params, secret)
        if hmac.compare_digest(signature.encode(), expected.encode()):
            return
    raise Unauthorized(
        f"{TWILIO_SIGNATURE_HEADER} does not match {url} and the parameters (wrong auth token, "
        "a changed parameter, or a proxy: set OMNI_PHONE_PUBLIC_BASE_URL to the URL Twilio calls)",
        reason="bad_signature",
    )


def verify_tccc(headers: Mapping[str, str], settings: PhoneSettings) -> None:
    """Raise Unauthorized unless the push carries the configured basicAuth credentials."""
    user, password = settings.tccc_username, settings.tccc_password
    if not user or password is None or not password.get_secret_value():
        raise Unauthorized(
            "TCCC push is not configured: set OMNI_TCCC_USERNAME and OMNI_TCCC_PASSWORD and "
            "choose basicAuth in the TCCC console (功能配置 > 数据推送)",
            reason="auth_not_configured",
        )
    scheme, _, encoded = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized(
            "send 'Authorization: Basic ...' (TCCC basicAuth)", reason="missing_auth"
        )
    try:
        given_user, sep, given_password = (
            base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Authorization: Basic value is not base64 'user:password'",
                           reason="bad_auth_header") from None
    ok_user = hmac.compare_digest(given_user.encode(), user.encode())
    ok_password = hmac.compare_digest(
        given_password.encode(), password.get_secret_value().encode()
    )
    if not (sep and ok_user and ok_password):
        raise Unauthorized("wrong TCCC push username or password", reason="bad_credentials")
