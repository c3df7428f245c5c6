"""WeChat Official Account settings: accounts from ``config/channels.yaml``, secrets from env.

``channels.yaml`` never holds a production secret. Each account names the
environment variables that hold its ``token`` and ``EncodingAESKey``
(``token_env``, ``encoding_aes_key_env``); a literal ``token`` /
``encoding_aes_key`` is accepted for demos only. An account whose secrets are
missing is skipped with a warning (requests to it get 404), so one unset
variable does not take the other channels down.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ...router import format_validation_error
from ...router.exceptions import ConfigError
from ..dedupe import DEFAULT_DEDUPE_TTL_S
from ..pii import load_pii_policy

__all__ = [
    "CHANNELS_FILE",
    "PATH",
    "WeChatAccount",
    "WeChatAccountConfig",
    "WeChatConfig",
    "account_label",
    "describe_validation_error",
    "load_wechat_config",
    "read_channels_yaml",
    "resolve_secret",
    "validate_aes_key",
]

log = logging.getLogger(__name__)

PATH: Final = "/wechat/{account}"
CHANNELS_FILE: Final = "channels.yaml"  # under Settings.config_dir
UNKNOWN_ACCOUNT_LABEL: Final = "-"  # metric label for unverified / unknown accounts
SECRET_KEYS: Final = ("token", "key", "secret")  # values under these keys are never shown

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


class WeChatConfig(BaseModel):
    """The ``wechat:`` section of ``channels.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp_window_s: float = Field(300.0, gt=0)  # replay window for `timestamp`
    max_body_bytes: int = Field(65_536, ge=1024)  # WeChat callbacks are a few KiB
    produce_timeout_s: float = Field(4.0, gt=0, le=30)  # WeChat gives up after 5 s
    dedupe_ttl_s: int = Field(DEFAULT_DEDUPE_TTL_S, ge=1)
    accounts: dict[str, WeChatAccountConfig] = Field(default_factory=dict)


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


def read_channels_yaml(path: Path) -> dict[str, Any]:
    """The parsed ``channels.yaml`` (its ``pii:`` policy checked); ``{}`` when absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.info("channels: %s not found; no WeChat/WeCom/Douyin accounts configured", path)
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of channel sections")
    load_pii_policy(data, str(path))
    return data


def describe_validation_error(exc: ValidationError, where: str) -> str:
    """One part per problem: key path, message, bad value (secrets never shown)."""
    return format_validation_error(exc, prefix=f"{where}.", hide=SECRET_KEYS, sep="; ", limit=5)


def resolve_secret(
    literal: SecretStr | None, env_name: str | None, environ: Mapping[str, str]
) -> SecretStr | None:
    """The secret from the named environment variable, else the (demo) literal."""
    if env_name:
        value = environ.get(env_name)
        if value:
            return SecretStr(value)
    return literal


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


def load_wechat_config(
    data: Mapping[str, Any], environ: Mapping[str, str], source: str = CHANNELS_FILE
) -> tuple[WeChatConfig, dict[str, WeChatAccount]]:
    """Validate the ``wechat:`` section and resolve every account's secrets."""
    env = environ  # Settings.environ: the variables as read at process start
    try:
        cfg = WeChatConfig.model_validate(data.get("wechat") or {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"{source}: wechat")) from None
    accounts: dict[str, WeChatAccount] = {}
    for name, acc in cfg.accounts.items():
        where = f"{source}: wechat.accounts.{name}"
        token = resolve_secret(acc.token, acc.token_env, env)
        aes = resolve_secret(acc.encoding_aes_key, acc.encoding_aes_key_env, env)
        if token is None:
            log.warning("%s: no token (set %s); account disabled", where, acc.token_env or "token")
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
    return cfg, accounts
