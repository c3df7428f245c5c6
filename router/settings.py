"""Process settings: one tree, read from the environment once at process start, then
passed down.

:class:`Settings` is the root: the broker, Redis, topic and HTTP settings every
process shares, and one section per component (``email``, ``phone``,
``agent_api``, ``sla``). Each environment variable is declared once, here (see
README, "Configuration reference", and the channel and SLA documents). ``Settings()``
is called once, by the CLI; everything else receives it or its section. The
sections are plain models: they never read the environment on their own.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "AgentApiSettings",
    "ConsoleSettings",
    "EmailSettings",
    "PhoneSettings",
    "Settings",
    "SlaServiceSettings",
    "default_config_dir",
]


def default_config_dir() -> Path:
    """The shipped ``config/`` directory (source checkout or installed wheel)."""
    # ``config/`` sits beside the packages: the repository's in a checkout,
    # ``omniroute/config`` in the wheel.
    return Path(__file__).resolve().parent.parent / "config"


def default_worker_data_dir() -> Path:
    """Where the router worker's runtime keeps its (empty: in-memory store) data folder."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"omniroute-{user}"


class _Section(BaseModel):
    """A part of the settings tree; fields are named by their environment variable."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


_Names = Annotated[tuple[str, ...], NoDecode]


def _split(value: Any) -> Any:
    """Comma-separated text or a JSON array -> a tuple."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return tuple(json.loads(text))
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return value


class EmailSettings(_Section):
    """The e-mail channel: inbound SMTP and the IMAP IDLE poller (docs/channels-email-phone.md).

    Lists accept either comma-separated text or a JSON array.
    """

    # -- which mail is ours ------------------------------------------------------
    domains: _Names = Field(default=(), alias="OMNI_EMAIL_DOMAINS")  # e.g. "kefu.example.com"
    # Full addresses we accept; each is an envelope ``account`` and a metric label.
    mailboxes: _Names = Field(default=(), alias="OMNI_EMAIL_MAILBOXES")
    # The one account (and metric label) for mail to any other address at ``domains``;
    # unset: such mail is refused at RCPT (550 5.1.1). SMTP needs this or ``mailboxes``.
    catch_all: str | None = Field(default=None, max_length=128, alias="OMNI_EMAIL_CATCH_ALL")

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

    # -- IMAP IDLE poller ------------------------------------------------------------
    imap_host: str | None = Field(default=None, alias="OMNI_IMAP_HOST")
    imap_port: int = Field(default=993, ge=1, le=65535, alias="OMNI_IMAP_PORT")
    imap_ssl: bool = Field(default=True, alias="OMNI_IMAP_SSL")
    imap_user: str = Field(default="", alias="OMNI_IMAP_USER")
    imap_password: SecretStr = Field(default=SecretStr(""), alias="OMNI_IMAP_PASSWORD")
    imap_folder: str = Field(default="INBOX", alias="OMNI_IMAP_FOLDER")
    imap_account: str | None = Field(default=None, alias="OMNI_IMAP_ACCOUNT")  # default: imap_user
    # Re-issue IDLE before NAT boxes and servers drop it (RFC 2177: < 29 min).
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

    @field_validator("catch_all", mode="before")
    @classmethod
    def _catch_all(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower() or None
            if value == "-":
                raise ValueError("OMNI_EMAIL_CATCH_ALL: '-' is the label of refusals; pick a name")
        return value

    def accepts_domain(self, domain: str) -> bool:
        """True if mail for ``domain`` is ours."""
        return domain.lower() in self.domains

    def account_for(self, address: str) -> str | None:
        """The account of mail to ``address`` (at one of our domains): the mailbox itself
        when it is listed, else the catch-all label, else None (refused)."""
        mailbox = address.lower()
        return mailbox if mailbox in self.mailboxes else self.catch_all


class PhoneSettings(_Section):
    """The phone channel's secrets and URLs (docs/channels-email-phone.md)."""

    twilio_auth_token: SecretStr | None = Field(default=None, alias="OMNI_TWILIO_AUTH_TOKEN")
    # The URL Twilio calls, as Twilio sees it (scheme, host, path prefix), when a
    # proxy or load balancer sits in front: signatures cover the full public URL.
    public_base_url: str | None = Field(default=None, alias="OMNI_PHONE_PUBLIC_BASE_URL")
    tccc_username: str | None = Field(default=None, alias="OMNI_TCCC_USERNAME")  # push basicAuth
    tccc_password: SecretStr | None = Field(default=None, alias="OMNI_TCCC_PASSWORD")
    # Default: phone.yaml in the config directory (OMNI_CONFIG_DIR).
    config_file: Path | None = Field(default=None, alias="OMNI_PHONE_CONFIG")
    dedupe_ttl_s: int = Field(default=86_400, ge=60, alias="OMNI_PHONE_DEDUPE_TTL_S")
    max_body_bytes: int = Field(default=65_536, ge=1024, alias="OMNI_PHONE_MAX_BODY_BYTES")

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError(
                f"OMNI_PHONE_PUBLIC_BASE_URL must start with https:// (got {value!r})"
            )
        return value


class AgentApiSettings(_Section):
    """The agent API and the agents' liveness, which the SLA worker's staffing reads too."""

    agent_tokens: tuple[SecretStr, ...] = Field(default=(), alias="OMNI_AGENT_TOKENS")
    agent_live_ttl_s: float = Field(default=90.0, gt=0, alias="OMNI_AGENT_LIVE_TTL_S")
    max_slots: int = Field(default=50, ge=1, alias="OMNI_AGENT_MAX_SLOTS")


class ConsoleSettings(_Section):
    """The live operations console at ``/console`` (README, "Operations console").

    It admits the agent tokens (``OMNI_AGENT_TOKENS``) and these viewer tokens, which
    open the console only (a wall screen, a supervisor's laptop), never the agent API.
    """

    viewer_tokens: tuple[SecretStr, ...] = Field(default=(), alias="OMNI_CONSOLE_TOKENS")
    push_s: float = Field(default=1.0, ge=0.2, le=60, alias="OMNI_CONSOLE_PUSH_S")
    decisions: int = Field(default=12, ge=1, le=200, alias="OMNI_CONSOLE_DECISIONS")
    # live-room figures are rates over this sliding window
    room_window_s: float = Field(default=60.0, ge=5, le=3600, alias="OMNI_CONSOLE_ROOM_WINDOW_S")
    # at-risk / breached counts scan every open SLA state: at most this often
    sla_refresh_s: float = Field(default=5.0, ge=1, le=300, alias="OMNI_CONSOLE_SLA_REFRESH_S")


class SlaServiceSettings(_Section):
    """The SLA worker process (docs/sla.md)."""

    web_port: int = Field(default=6067, ge=0, le=65535, alias="OMNI_SLA_WEB_PORT")
    tick_s: float = Field(default=1.0, gt=0, le=60, alias="OMNI_SLA_TICK_S")


def _section(model: type[_Section]) -> Any:
    """A section's defaults (not the environment: only ``Settings()`` reads it)."""
    return Field(default_factory=lambda: model.model_validate({}))


_SECTIONS: dict[str, type[_Section]] = {
    "email": EmailSettings,
    "phone": PhoneSettings,
    "agent_api": AgentApiSettings,
    "console": ConsoleSettings,
    "sla": SlaServiceSettings,
}


class Settings(BaseSettings):
    """Every environment setting of omniroute (see README, "Configuration reference")."""

    model_config = SettingsConfigDict(env_prefix="", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP")
    redis_url: str = Field("redis://127.0.0.1:6379/0", alias="REDIS_URL")
    config_dir: Path = Field(default_factory=default_config_dir, alias="OMNI_CONFIG_DIR")
    topic_prefix: str = Field("", alias="OMNI_TOPIC_PREFIX")
    redis_prefix: str = Field("omni", alias="OMNI_REDIS_PREFIX")
    consumer_group: str = Field("omniroute-router", alias="OMNI_CONSUMER_GROUP")
    topic_partitions: int = Field(8, ge=1, le=1024, alias="OMNI_TOPIC_PARTITIONS")

    http_host: str = Field("127.0.0.1", alias="OMNI_HTTP_HOST")
    http_port: int = Field(8080, ge=0, le=65535, alias="OMNI_HTTP_PORT")
    worker_web_port: int = Field(6066, ge=0, le=65535, alias="OMNI_WORKER_WEB_PORT")
    # The worker's data folder goes here, never into the directory it was started in.
    worker_data_dir: Path = Field(default_factory=default_worker_data_dir,
                                  alias="OMNI_WORKER_DATA_DIR")
    ingest_tokens: tuple[SecretStr, ...] = Field((), alias="OMNI_INGEST_TOKENS")
    ingest_hmac_secret: SecretStr | None = Field(None, alias="OMNI_INGEST_HMAC_SECRET")
    max_body_bytes: int = Field(1_048_576, ge=1024, alias="OMNI_MAX_BODY_BYTES")
    max_in_flight: int = Field(1000, ge=1, alias="OMNI_MAX_IN_FLIGHT")
    # A request's head must arrive in full within this of the connection opening or
    # of its previous answer (aiohttp's keep-alive timer: idle connections close too).
    http_header_timeout_s: float = Field(15.0, gt=0, le=3600, alias="OMNI_HTTP_HEADER_TIMEOUT_S")
    # A request's body must arrive in full within this once its head is in (else 408).
    http_body_timeout_s: float = Field(10.0, gt=0, le=3600, alias="OMNI_HTTP_BODY_TIMEOUT_S")
    max_batch_messages: int = Field(500, ge=1, le=10_000, alias="OMNI_MAX_BATCH_MESSAGES")
    hmac_window_s: float = Field(300.0, gt=0, alias="OMNI_HMAC_WINDOW_S")
    produce_timeout_s: float = Field(5.0, gt=0, alias="OMNI_PRODUCE_TIMEOUT_S")
    # Key of the hash that turns sender addresses and caller numbers into customer ids.
    customer_id_salt: SecretStr = Field(SecretStr(""), alias="OMNI_CUSTOMER_ID_SALT")

    batch_max_records: int = Field(1000, ge=1, le=100_000, alias="OMNI_BATCH_MAX_RECORDS")
    decision_ttl_s: int = Field(7 * 86_400, ge=60, alias="OMNI_DECISION_TTL_S")
    tier_cache_ttl_s: float = Field(60.0, ge=0, alias="OMNI_TIER_CACHE_TTL_S")
    tier_cache_size: int = Field(100_000, ge=0, alias="OMNI_TIER_CACHE_SIZE")
    fetch_max_wait_ms: int = Field(100, ge=0, le=10_000, alias="OMNI_FETCH_MAX_WAIT_MS")
    fast_rebalance: bool = Field(False, alias="OMNI_FAST_REBALANCE")
    # Consumer-group membership of every worker (router, SLA, the faust runtime), see
    # README "Operations": a member that stops heartbeating is evicted after the
    # session timeout (Apache Kafka accepts 6-1800 s); a rebalance waits at most the
    # rebalance timeout for members to rejoin (aiokafka rejoins in the background,
    # so this need not cover a batch's processing time).
    kafka_session_timeout_s: float = Field(10.0, ge=6, le=1800,
                                           alias="OMNI_KAFKA_SESSION_TIMEOUT_S")
    kafka_heartbeat_interval_s: float = Field(1.0, gt=0, le=600,
                                              alias="OMNI_KAFKA_HEARTBEAT_INTERVAL_S")
    kafka_rebalance_timeout_s: float = Field(10.0, ge=1, le=1800,
                                             alias="OMNI_KAFKA_REBALANCE_TIMEOUT_S")
    # Static membership (KIP-345): a stable name per worker process (a StatefulSet pod
    # name, a systemd instance), unique within each group. A worker that restarts within
    # the session timeout takes its partitions back without a rebalance. A static member
    # does not leave the group on a clean stop: its partitions wait for the session
    # timeout, so leave this unset where workers come and go (autoscaling).
    group_instance_id: str | None = Field(None, min_length=1, max_length=200,
                                          alias="OMNI_GROUP_INSTANCE_ID")
    kafka_idempotence: bool = Field(False, alias="OMNI_KAFKA_IDEMPOTENCE")
    # RUST_LOG of the embedded Tansu broker that ``demo`` and the rehearsals start
    tansu_log: str = Field("warn", min_length=1, alias="OMNI_TANSU_LOG")

    email: EmailSettings = _section(EmailSettings)
    phone: PhoneSettings = _section(PhoneSettings)
    agent_api: AgentApiSettings = _section(AgentApiSettings)
    console: ConsoleSettings = _section(ConsoleSettings)
    sla: SlaServiceSettings = _section(SlaServiceSettings)

    #: The environment as read at start, for the variables that ``channels.yaml``
    #: names per account (``token_env``, ``secret_env``, ...). Never printed.
    environ: Mapping[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values first, then the process environment (the whole tree)."""
        return init_settings, _ProcessEnvironment(settings_cls)

    @model_validator(mode="after")
    def _heartbeats_fit_the_session(self) -> Settings:
        if self.kafka_heartbeat_interval_s * 3 > self.kafka_session_timeout_s:
            raise ValueError(
                f"OMNI_KAFKA_HEARTBEAT_INTERVAL_S ({self.kafka_heartbeat_interval_s}) must be "
                f"at most a third of OMNI_KAFKA_SESSION_TIMEOUT_S "
                f"({self.kafka_session_timeout_s}), or one late heartbeat evicts a live worker"
            )
        return self

    def topic(self, name: str) -> str:
        """The full topic name for one of ``router.topics``."""
        return f"{self.topic_prefix}{name}"

    def child_environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child process that must read these same settings.

        The environment read at start, with every root variable written from this tree
        (an unset optional one removed), then ``extra``. The sections' variables come
        from the environment read at start (or ``extra``).
        """
        env = dict(self.environ)
        for name, field in type(self).model_fields.items():
            if name in _SECTIONS or name == "environ" or field.alias is None:
                continue
            value = getattr(self, name)
            if value is None:
                env.pop(field.alias, None)
            else:
                env[field.alias] = _variable(value)
        env.update(extra or {})
        return env


def _variable(value: Any) -> str:
    """A setting's value as its environment variable spells it (secrets revealed)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return json.dumps([_variable(v) for v in value])
    return str(value)


class _Variables(EnvSettingsSource):
    """pydantic-settings' reading of variables; a list that is not JSON names its variable."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            # the value is not repeated: it may be a secret
            raise ValueError(
                f"{field.alias or field_name}: not valid JSON; write a list as "
                '\'["first", "second"]\''
            ) from None


class _ProcessEnvironment(_Variables):
    """The root's variables, each section's variables, and the snapshot for ``environ``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in _SECTIONS or field_name == "environ":
            return None, field_name, False  # filled in __call__, never from a variable
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for name, model in _SECTIONS.items():
            # the same decoding as the root's (JSON lists, NoDecode), per section
            values = _Variables(model)()  # type: ignore[arg-type]  # a model, not settings
            if values:
                data[name] = values
        data["environ"] = dict(os.environ)
        return data
