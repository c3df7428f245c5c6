"""``config/channels.yaml``, written once for every channel that lives in it.

WeChat, WeCom and Douyin differ only in their section models. Each model derives
from :class:`ChannelSection` (the limits they share), names its ``SECTION`` and
resolves its secrets in ``resolve``; :func:`load_section` validates a section,
:func:`channel_installer` turns a model and the channel's ``make_installer`` into
the ``install(app, ctx)`` that the HTTP app calls.

``channels.yaml`` never holds a production secret: an account or message type
names the environment variable that holds it (``token_env``, ``secret_env``,
...), resolved from ``Settings.environ``; a literal (``token``, ``secret``) is
for demos only. An entry whose secret is missing is disabled with a warning, so
one unset variable does not take the other channels down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ..router import format_validation_error
from ..router.exceptions import ConfigError
from ..router.http import HttpContext, Installer
from ..router.pii import load_pii_policy
from ..router.settings import Settings
from .dedupe import DEFAULT_DEDUPE_TTL_S

__all__ = [
    "CHANNELS_FILE",
    "ChannelSection",
    "channel_installer",
    "channels_path",
    "load_section",
    "read_channels_yaml",
    "resolve_secret",
]

log = logging.getLogger(__name__)

CHANNELS_FILE: Final = "channels.yaml"  # under Settings.config_dir
SECRET_KEYS: Final = ("token", "key", "secret")  # values under these keys are never shown


class ChannelSection(BaseModel):
    """One channel's section of ``channels.yaml``: the limits every channel has.

    Subclasses add their entries (accounts, message types), set ``SECTION`` and
    implement ``resolve``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    SECTION: ClassVar[str]

    timestamp_window_s: float = Field(300.0, gt=0)  # replay window of signed requests
    max_body_bytes: int = Field(65_536, ge=1024)  # callbacks are a few KiB
    produce_timeout_s: float = Field(4.0, gt=0, le=30)  # WeChat gives up after 5 s
    dedupe_ttl_s: int = Field(DEFAULT_DEDUPE_TTL_S, ge=1)

    def resolve(self, environ: Mapping[str, str], source: str = CHANNELS_FILE) -> Any:
        """The usable entries, their secrets taken from ``environ`` (disabled ones left out).

        Raises:
            ConfigError: a secret is present but unusable (e.g. a short AES key).
        """
        raise NotImplementedError

    def where(self, source: str, *path: str) -> str:
        """``<file>: <section>.<path>`` for messages."""
        return f"{source}: " + ".".join((self.SECTION, *path))


S = TypeVar("S", bound=ChannelSection)


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


def channels_path(settings: Settings) -> Path:
    """``channels.yaml`` in the configuration directory."""
    return Path(settings.config_dir) / CHANNELS_FILE


def load_section(model: type[S], data: Mapping[str, Any], source: str = CHANNELS_FILE) -> S:
    """Validate ``model.SECTION`` of the parsed ``channels.yaml`` (absent: the defaults).

    Raises:
        ConfigError: naming the file, the key path and the problem (secrets not shown).
    """
    try:
        return model.model_validate(data.get(model.SECTION) or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(
            exc, prefix=f"{source}: {model.SECTION}.", hide=SECRET_KEYS, sep="; ", limit=5,
        )) from None


def resolve_secret(
    literal: SecretStr | None, env_name: str | None, environ: Mapping[str, str]
) -> SecretStr | None:
    """The secret from the named environment variable, else the (demo) literal."""
    if env_name:
        value = environ.get(env_name)
        if value:
            return SecretStr(value)
    return literal


def channel_installer(model: type[S], make: Callable[[S, Any], Installer]) -> Installer:
    """The ``install(app, ctx)`` of a channel configured in ``channels.yaml``.

    It reads the file in ``ctx.settings.config_dir``, validates ``model``'s
    section, resolves its secrets from ``ctx.settings.environ`` and adds the routes
    of ``make(config, config.resolve(...))``.
    """

    def install(app: web.Application, ctx: HttpContext) -> None:
        path = channels_path(ctx.settings)
        config = load_section(model, read_channels_yaml(path), str(path))
        make(config, config.resolve(ctx.settings.environ, str(path)))(app, ctx)

    return install
