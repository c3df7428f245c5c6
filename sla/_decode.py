"""Decoding of the records the SLA worker consumes (Decision JSON, agent events, signals)."""

from __future__ import annotations

from typing import Any

import orjson

from ..router.models import Band, Channel, Decision, Priority, TagHit

__all__ = ["as_text", "decode_decision", "decode_signal"]


def as_text(value: object) -> str:
    """A Redis reply (bytes, or str on a decoding client) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_decision(raw: bytes) -> Decision:
    """Decision JSON as produced by the router; raises ValueError naming the field."""
    try:
        d: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"decision is not JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ValueError("decision must be a JSON object")
    try:
        prio = d["priority"]
        return Decision(
            message_id=_text(d, "message_id"),
            conversation_id=_text(d, "conversation_id"),
            channel=Channel(d["channel"]),
            customer_id=str(d.get("customer_id") or ""),
            tags=tuple(TagHit(str(t["id"]), tuple(t.get("keywords") or ()))
                       for t in d.get("tags") or ()),
            priority=Priority(float(prio.get("score", 0)), Band(prio["band"]),
                              tuple(prio.get("reasons") or ())),
            skill_group=_text(d, "skill_group"),
            queue=str(d.get("queue") or d["skill_group"]),
            rule_id=str(d.get("rule_id") or ""),
            config_version=str(d.get("config_version") or ""),
            received_at_ms=int(d["received_at_ms"]),
            decided_at_ms=int(d.get("decided_at_ms") or d["received_at_ms"]),
            overflow_from=d.get("overflow_from"),
            agent_id=d.get("agent_id"),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"decision field missing or mistyped: {exc!r}") from None


def decode_signal(raw: bytes) -> tuple[str, float, float]:
    """(room id, gifts, likes) of an omni.signals record.

    Accepts ``{"room_id"|"room"|"account": ..., "gifts"|"gift": n, "likes"|"like": n}``
    or ``{"room_id": ..., "kind": "gift"|"like", "count": n}``.
    """
    d: Any = orjson.loads(raw)
    if not isinstance(d, dict):
        raise ValueError("signal must be a JSON object")
    room = d.get("room_id") or d.get("room") or d.get("account")
    if not isinstance(room, str) or not room:
        raise ValueError("signal needs a 'room_id'")
    gifts = float(d.get("gifts") or d.get("gift") or 0)
    likes = float(d.get("likes") or d.get("like") or 0)
    kind, count = d.get("kind"), d.get("count")
    if isinstance(count, int | float):
        if kind in ("gift", "live_gift"):
            gifts += count
        elif kind in ("like", "live_like"):
            likes += count
    return room, gifts, likes


def _text(d: dict[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"decision field {key!r} must be a non-empty string, got {value!r}")
    return value
