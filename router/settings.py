"""Process settings: read from the environment once, at the edge, then passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "default_config_dir"]


def default_config_dir() -> Path:
    """The shipped ``config/`` directory (source checkout or installed wheel)."""
    # ``config/`` sits beside the packages: the repository's in a checkout,
    # ``omniroute/config`` in the wheel.
    return Path(__file__).resolve().parent.parent / "config"


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
    ingest_tokens: tuple[SecretStr, ...] = Field((), alias="OMNI_INGEST_TOKENS")
    ingest_hmac_secret: SecretStr | None = Field(None, alias="OMNI_INGEST_HMAC_SECRET")
    max_body_bytes: int = Field(1_048_576, ge=1024, alias="OMNI_MAX_BODY_BYTES")
    max_in_flight: int = Field(1000, ge=1, alias="OMNI_MAX_IN_FLIGHT")
    max_batch_messages: int = Field(500, ge=1, le=10_000, alias="OMNI_MAX_BATCH_MESSAGES")
    hmac_window_s: float = Field(300.0, gt=0, alias="OMNI_HMAC_WINDOW_S")
    produce_timeout_s: float = Field(5.0, gt=0, alias="OMNI_PRODUCE_TIMEOUT_S")

    batch_max_records: int = Field(1000, ge=1, le=100_000, alias="OMNI_BATCH_MAX_RECORDS")
    decision_ttl_s: int = Field(7 * 86_400, ge=60, alias="OMNI_DECISION_TTL_S")
    tier_cache_ttl_s: float = Field(60.0, ge=0, alias="OMNI_TIER_CACHE_TTL_S")
    tier_cache_size: int = Field(100_000, ge=0, alias="OMNI_TIER_CACHE_SIZE")
    fetch_max_wait_ms: int = Field(100, ge=0, le=10_000, alias="OMNI_FETCH_MAX_WAIT_MS")
    fast_rebalance: bool = Field(False, alias="OMNI_FAST_REBALANCE")
    kafka_idempotence: bool = Field(False, alias="OMNI_KAFKA_IDEMPOTENCE")

    def topic(self, name: str) -> str:
        """The full topic name for one of ``router.topics``."""
        return f"{self.topic_prefix}{name}"
