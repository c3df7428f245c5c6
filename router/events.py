"""Records on the topics after routing: their models, shared by producers and consumers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = ["AGENT_EVENT_TYPES", "AgentEvent"]

AGENT_EVENT_TYPES: Final = frozenset(
    {"claim", "accept", "reply", "wait_customer", "resolve", "transfer"}
)


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """What the agent API produces to omni.agent-events (JSON)."""

    type: str  # claim | accept | reply | wait_customer | resolve | transfer
    conversation_id: str
    agent_id: str
    at_ms: int
    group: str = ""
    to_group: str | None = None
    message_id: str | None = None
    reason: str | None = None

    @property
    def event_id(self) -> str:
        """Stable id for deduplication by consumers."""
        return f"{self.conversation_id}:{self.type}:{self.agent_id}:{self.at_ms}"

    def to_json(self) -> bytes:
        """orjson bytes, with ``event_id`` included."""
        return orjson.dumps({**dataclasses.asdict(self), "event_id": self.event_id})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentEvent:
        """Build from decoded JSON; raises ValueError naming the bad field."""
        kind = data.get("type")
        if kind not in AGENT_EVENT_TYPES:
            raise ValueError(f"agent event 'type' must be one of {sorted(AGENT_EVENT_TYPES)}")
        for name in ("conversation_id", "agent_id"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"agent event field {name!r} must be a non-empty string")
        to_group = data.get("to_group")
        if to_group is not None and (not isinstance(to_group, str) or not to_group):
            raise ValueError("agent event field 'to_group' must be a non-empty string or null")
        at = data.get("at_ms")
        if isinstance(at, bool) or not isinstance(at, int):
            raise ValueError("agent event field 'at_ms' must be an integer (epoch ms)")
        return cls(
            type=kind,
            conversation_id=data["conversation_id"],
            agent_id=data["agent_id"],
            at_ms=at,
            group=str(data.get("group") or ""),
            to_group=to_group,
            message_id=data.get("message_id"),
            reason=data.get("reason"),
        )
