"""Kafka topic names. Every process prefixes them with ``Settings.topic_prefix``."""

from __future__ import annotations

from typing import Final

__all__ = [
           "AGENT_EVENTS",
           "ALL_TOPICS",
           "CHATTER",
           "DEAD_LETTER",
           "INBOUND",
           "ROUTED",
           "SIGNALS",
           "SLA_ALERTS",
           "SURGE",
]

INBOUND: Final = "omni.inbound"  # normalised Envelopes from every adapter; key = conversation id
ROUTED: Final = "omni.routed"  # one Decision per message; key = conversation id
DEAD_LETTER: Final = "omni.dead-letter"  # records that could not be processed, with the reason
SLA_ALERTS: Final = "omni.sla-alerts"  # SLA warnings, breaches and escalations
SURGE: Final = "omni.surge"  # surge.start / surge.clear / incident signals
AGENT_EVENTS: Final = "omni.agent-events"  # claim / accept / reply / resolve / transfer events
CHATTER: Final = "omni.chatter"  # live-stream chatter kept but not routed to agents
SIGNALS: Final = "omni.signals"  # non-routable counts (gifts, likes) feeding surge detection

ALL_TOPICS: Final = (INBOUND, ROUTED, DEAD_LETTER, SLA_ALERTS, SURGE, AGENT_EVENTS, CHATTER,
                     SIGNALS)
