"""The one record format of omni.dead-letter, whichever worker writes it."""

from __future__ import annotations

import base64
from typing import Final

import orjson
from aiokafka import ConsumerRecord

__all__ = ["PREVIEW_CHARS", "dead_letter_record"]

PREVIEW_CHARS: Final = 500  # readable start of the original value, for operators


def dead_letter_record(
    record: ConsumerRecord[bytes, bytes], reason: str, now_ms: int, stage: str
) -> bytes:
    """JSON with the reason, the source position, the original bytes and a preview."""
    value = record.value or b""
    return orjson.dumps({
        "reason": reason,
        "stage": stage,
        "source": {"topic": record.topic, "partition": record.partition,
                   "offset": record.offset},
        "key_b64": base64.b64encode(record.key).decode() if record.key else None,
        "value_b64": base64.b64encode(value).decode(),
        "value_preview": value[:PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS],
        "failed_at_ms": now_ms,
    })
