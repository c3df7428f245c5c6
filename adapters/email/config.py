"""Settings of the e-mail channel (inbound SMTP and the IMAP IDLE poller).

Read from the environment once, at the edge (``EmailSettings()``), then passed
down. Lists accept either comma-separated text or a JSON array.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["CHANNEL", "EmailSettings"]

CHANNEL: Final = "email"  # metric label and dedupe namespace

_Names = Annotated[tuple[str, ...], NoDecode]


def _split(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return tuple(json.loads(text))
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return value


class EmailSettings(BaseSettings):
    """Every environment setting of the e-mail channel (docs/channels-email-phone.md)."""

    model_config = SettingsConfigDict(
        env_prefix="", frozen=True, extra="ignore", populate_by_name=True
    )

    # -- which mail is ours ------------------------------------------------------
    domains: _Names = Field(default=(), alias="OMNI_EMAIL_DOMAINS")  # e.g. "kefu.example.com"
    # Full addresses we accept; empty = any local part at ``domains``.
    mailboxes: _Names = Field(default=(), alias="OMNI_EMAIL_MAILBOXES")

    # -- inbound SMTP --------------------------------------------------------------
    smtp_host: str = Field(default="127.0.0.1", alias="OMNI_SMTP_HOST")
    smtp_port: int = Field(default=2525, ge=0, le=65535, alias="OMNI_SMTP_PORT")
    # Name in the banner and the EHLO answer.
    smtp_hostname: str = Field(default="omniroute", alias="OMNI_SMTP_HOSTNAME")
    max_message_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, alias="OMNI_SMTP_MAX_MESSAGE_BYTES"
    )
    max_recipients: int = Field(default=20, ge=1, le=1000, alias="OMNI_SMTP_MAX_RECIPIENTS")
    smtp_timeout_s: float = Field(default=300.0, gt=0, alias="OMNI_SMTP_TIMEOUT_S")  # idle client

    # -- shared --------------------------------------------------------------------
    dedupe_ttl_s: int = Field(default=7 * 86_400, ge=60, alias="OMNI_EMAIL_DEDUPE_TTL_S")
    # Key for hashing sender addresses into customer ids (no address goes to Kafka).
    customer_id_salt: SecretStr = Field(default=SecretStr(""), alias="OMNI_CUSTOMER_ID_SALT")

    # -- IMAP IDLE poller ------------------------------------------------------------
    imap_host: str | None = Field(default=None, alias="OMNI_IMAP_HOST")
    imap_port: int = Field(default=993, ge=1, le=65535, alias="OMNI_IMAP_PORT")
    imap_ssl: bool = Field(default=True, alias="OMNI_IMAP_SSL")
    imap_user: str = Field(default="", alias="OMNI_IMAP_USER")
    imap_password: SecretStr = Field(default=SecretStr(""), alias="OMNI_IMAP_PASSWORD")
    imap_folder: str = Field(default="INBOX", alias="OMNI_IMAP_FOLDER")
    imap_account: str | None = Field(default=None, alias="OMNI_IMAP_ACCOUNT")  # default: imap_user
    # Re-issue IDLE before NAT boxes and servers drop it (RFC 2177: < 29 min).
    # Also bounds how long mail that lands between the UNSEEN search and IDLE waits.
    imap_idle_s: float = Field(default=60.0, gt=0, le=1740, alias="OMNI_IMAP_IDLE_S")
    imap_backoff_initial_s: float = Field(default=1.0, gt=0, alias="OMNI_IMAP_BACKOFF_INITIAL_S")
    imap_backoff_max_s: float = Field(default=60.0, gt=0, alias="OMNI_IMAP_BACKOFF_MAX_S")
    imap_timeout_s: float = Field(default=30.0, gt=0, alias="OMNI_IMAP_TIMEOUT_S")  # per command

    @field_validator("domains", "mailboxes", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, list | tuple):
            return tuple(str(v).strip().lower() for v in value if str(v).strip())
        return value

    def accepts_domain(self, domain: str) -> bool:
        """True if mail for ``domain`` is ours."""
        return domain.lower() in self.domains

    def accepts_mailbox(self, address: str) -> bool:
        """True if ``address`` (at one of our domains) is a known mailbox."""
        return not self.mailboxes or address.lower() in self.mailboxes
