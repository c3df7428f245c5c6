"""WeChat Official Account settings: the ``wechat:`` section of ``config/channels.yaml``.

Each account names the environment variables that hold its ``token`` and
``EncodingAESKey`` (``token_env``, ``encoding_aes_key_env``); a literal
``token`` / ``encoding_aes_key`` is for demos only (see ``adapters.channel_config``).
WeCom (``adapters.wecom``) shares the callback machinery: both sections derive
from :class:`CallbackSection`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ...router.exceptions import ConfigError
from ...router.models import Channel
from ..channel_config import CHANNELS_FILE, ChannelSection, resolve_secret

__all__ = [
    "PATH",
    "CallbackSection",
    "WeChatAccount",
    "WeChatAccountConfig",
    "WeChatConfig",
    "account_label",
    "validate_aes_key",
]

log = logging.getLogger(__name__)

PATH: Final = "/wechat/{account}"
UNKNOWN_ACCOUNT_LABEL: Final = "-"  # metric label for unverified / unknown accounts

Mode = Literal["plain", "compatible", "safe"]


class WeChatAccountConfig(BaseModel):
    """One Official Account as written in ``channels.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: str = Field(min_length=1, max_length=64)
    token_env: str | None = None
    token: SecretStr | None = None  # demo only: prefer token_env
    encoding_aes_key_env: str | None = None
    encoding_aes_key: SecretStr | None = None  # demo only: prefer encoding_aes_key_env
    #: plain: no encryption; compatible: both accepted; safe: encrypted only.
    mode: Mode = "safe"


@dataclass(frozen=True, slots=True)
class WeChatAccount:
    """A usable account: its secrets resolved (``SecretStr``: never printed)."""

    name: str
    app_id: str  # the appid (OA) or corp id (WeCom) checked after decryption
    token: SecretStr
    encoding_aes_key: SecretStr | None
    mode: Mode

    def __repr__(self) -> str:
        return f"WeChatAccount({self.name!r}, app_id={self.app_id!r}, mode={self.mode})"


def account_label(name: str, known: Mapping[str, object]) -> str:
    """Metric label for an account path segment: ``-`` unless it is configured
    (attackers must not be able to create label values)."""
    return name if name in known else UNKNOWN_ACCOUNT_LABEL


def validate_aes_key(key: str, where: str) -> None:
    """Raise ConfigError unless ``key`` is a 43-character EncodingAESKey."""
    if len(key) != 43:
        raise ConfigError(
            f"{where}: EncodingAESKey must be 43 characters, got {len(key)}; copy it again from "
            "the platform's developer settings"
        )
    try:
        raw = base64.b64decode(key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: EncodingAESKey is not base64 (A-Z, a-z, 0-9, +, /)") from None
    if len(raw) != 32:  # pragma: no cover - 43 base64 chars always decode to 32 bytes
        raise ConfigError(f"{where}: EncodingAESKey must decode to 32 bytes")


class CallbackSection(ChannelSection):
    """A WeChat-family section (``wechat``, ``wecom``): accounts served by one
    :class:`~adapters.wechat.adapter.CallbackHandler` at ``PATH``."""

    CHANNEL: ClassVar[Channel]
    PATH: ClassVar[str]
    #: WeCom: ``msg_signature`` on GET and POST, ``echostr`` encrypted.
    ALWAYS_ENCRYPTED: ClassVar[bool] = False

    def resolve(
        self, environ: Mapping[str, str], source: str = CHANNELS_FILE
    ) -> dict[str, WeChatAccount]:
        """The usable accounts by path name, secrets from ``environ``."""
        raise NotImplementedError


class WeChatConfig(CallbackSection):
    """The ``wechat:`` section of ``channels.yaml``."""

    SECTION: ClassVar[str] = "wechat"
    CHANNEL: ClassVar[Channel] = Channel.WECHAT
    PATH: ClassVar[str] = PATH

    accounts: dict[str, WeChatAccountConfig] = Field(default_factory=dict)

    def resolve(
        self, environ: Mapping[str, str], source: str = CHANNELS_FILE
    ) -> dict[str, WeChatAccount]:
        """Accounts with a token (and an EncodingAESKey unless ``mode: plain``)."""
        accounts: dict[str, WeChatAccount] = {}
        for name, acc in self.accounts.items():
            where = self.where(source, "accounts", name)
            token = resolve_secret(acc.token, acc.token_env, environ)
            aes = resolve_secret(acc.encoding_aes_key, acc.encoding_aes_key_env, environ)
            if token is None:
                log.warning("%s: no token (set %s); account disabled", where,
                            acc.token_env or "token")
                continue
            if aes is None and acc.mode != "plain":
                log.warning(
                    "%s: mode %s needs an EncodingAESKey (set %s); account disabled",
                    where, acc.mode, acc.encoding_aes_key_env or "encoding_aes_key",
                )
                continue
            if aes is not None:
                validate_aes_key(aes.get_secret_value(), where)
            accounts[name] = WeChatAccount(name, acc.app_id, token, aes, acc.mode)
        return accounts
