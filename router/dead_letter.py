"""Building the one record of omni.dead-letter (:class:`~router.events.DeadLetterRecord`)
from the consumed record that failed, whichever worker writes it."""

from __future__ import annotations

import base64
from typing import Final

from aiokafka import ConsumerRecord

from .events import DeadLetterRecord, DeadLetterSource, DeadLetterStage

__all__ = ["PREVIEW_CHARS", "dead_letter", "dead_letter_record"]

PREVIEW_CHARS: Final = 500  # readable start of the original value, for operators


def dead_letter(
    record: ConsumerRecord[bytes, bytes], reason: str, now_ms: int, stage: DeadLetterStage
) -> DeadLetterRecord:
    """The dead letter of ``record``: the reason, its position, its bytes and a preview."""
    value = record.value or b""
    return DeadLetterRecord(
        reason=reason,
        stage=stage,
        source=DeadLetterSource(record.topic, record.partition, record.offset),
        key_b64=base64.b64encode(record.key).decode() if record.key else None,
        value_b64=base64.b64encode(value).decode(),
        value_preview=value[:PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS],
        failed_at_ms=now_ms,
    )


def dead_letter_record(
    record: ConsumerRecord[bytes, bytes], reason: str, now_ms: int, stage: DeadLetterStage
) -> bytes:
    """The JSON of :func:`dead_letter`, as sent to omni.dead-letter."""
    return dead_letter(record, reason, now_ms, stage).to_json()
