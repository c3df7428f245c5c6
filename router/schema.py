"""JSON schemas of every topic record (published in docs/schema/<name>.schema.json).

The schemas are generated from the models (pydantic's serialisation schema of each
dataclass), then adjusted where the JSON differs from the dataclass: fields left out
when None are optional but never null, an agent event carries ``event_id``, and a
chatter record is an envelope whose ``meta`` names the chatter rule.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import TypeAdapter

from . import topics
from .events import (
    AGENT_EVENT_TYPES,
    CHATTER_RULES,
    AgentEvent,
    ChatterRecord,
    DeadLetterRecord,
    SignalRecord,
    SlaAlert,
    SurgeSignal,
)
from .models import Decision, Envelope

__all__ = ["RECORDS", "json_schema"]

# record name -> (model, topic); the name is the CLI argument and the file name
RECORDS: Final[dict[str, tuple[type, str]]] = {
    "envelope": (Envelope, topics.INBOUND),
    "decision": (Decision, topics.ROUTED),
    "sla-alert": (SlaAlert, topics.SLA_ALERTS),
    "surge-signal": (SurgeSignal, topics.SURGE),
    "agent-event": (AgentEvent, topics.AGENT_EVENTS),
    "chatter": (ChatterRecord, topics.CHATTER),
    "signal": (SignalRecord, topics.SIGNALS),
    "dead-letter": (DeadLetterRecord, topics.DEAD_LETTER),
}


def json_schema(which: str) -> dict[str, Any]:
    """The JSON schema of record ``which`` (a key of ``RECORDS``); KeyError otherwise."""
    model, _ = RECORDS[which]
    if model is ChatterRecord:
        schema = _chatter()
    else:
        schema = TypeAdapter(model).json_schema(mode="serialization")
        _omitted_when_none(schema, getattr(model, "OMITTED_WHEN_NONE", frozenset()))
        if model is AgentEvent:
            _agent_event(schema)
    schema["$id"] = f"https://omniroute.invalid/schema/{which}.v1.json"
    return schema


def _omitted_when_none(schema: dict[str, Any], names: frozenset[str]) -> None:
    """Fields absent when None: optional, but never null when present."""
    for name in names:
        prop = schema["properties"][name]
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1:
            prop.update(branches[0])
        prop.pop("default", None)


def _agent_event(schema: dict[str, Any]) -> None:
    props = schema["properties"]
    props["type"]["enum"] = sorted(AGENT_EVENT_TYPES)
    props["event_id"] = {
        "description": "conversation_id:type:agent_id:at_ms, for deduplication",
        "title": "Event Id",
        "type": "string",
    }
    schema["required"].append("event_id")


def _chatter() -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(Envelope).json_schema(mode="serialization")
    schema["title"] = ChatterRecord.__name__
    schema["description"] = " ".join((ChatterRecord.__doc__ or "").split())
    meta = schema["properties"]["meta"]
    meta["properties"] = {
        "chatter_rule": {"enum": list(CHATTER_RULES), "title": "Chatter Rule",
                         "type": "string"},
    }
    meta["required"] = ["chatter_rule"]
    meta.pop("default", None)
    schema["required"].append("meta")
    return schema
