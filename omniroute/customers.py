"""``omniroute customers import``: customer tiers from CSV into Redis."""

from __future__ import annotations

import csv
from pathlib import Path

from .router.exceptions import ConfigError
from .router.keys import Keys
from .router.redis_client import connect
from .router.settings import Settings

__all__ = ["import_tiers", "read_tiers"]

MAX_ID_CHARS = 256
BATCH = 5000


def read_tiers(path: Path) -> dict[str, str]:
    """Parse ``customer_id,tier`` rows; raise ConfigError naming the line on bad input."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    tiers: dict[str, str] = {}
    with handle:
        reader = csv.DictReader(handle)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "customer_id" not in fields or "tier" not in fields:
            raise ConfigError(
                f"{path}:1: header must contain customer_id and tier, got {fields}"
            )
        reader.fieldnames = fields
        for row in reader:
            line = reader.line_num
            cid = (row.get("customer_id") or "").strip()
            tier = (row.get("tier") or "").strip().lower()
            if not cid or not tier:
                raise ConfigError(f"{path}:{line}: empty customer_id or tier")
            if len(cid) > MAX_ID_CHARS or len(tier) > 64:
                raise ConfigError(f"{path}:{line}: customer_id or tier too long")
            tiers[cid] = tier
    return tiers


async def import_tiers(settings: Settings, path: Path) -> int:
    """HSET every tier into ``Keys.customer_tiers()``; returns the number imported."""
    tiers = read_tiers(path)
    redis = connect(settings.redis_url)
    key = Keys(settings.redis_prefix).customer_tiers()
    try:
        items = list(tiers.items())
        for i in range(0, len(items), BATCH):
            await redis.hset(key, mapping=dict(items[i : i + BATCH]))
    finally:
        await redis.aclose()
    return len(tiers)
