"""SLA timers, escalation, business calendars, surge and incident detection.

Wiring (see docs/sla.md): ``SlaWorker(settings, registry, clock)`` is the service;
``router.agent_api.install`` adds the agent API to the adapters' HTTP app.
"""

from sla.agents import AgentDesk
from sla.calendar import AlwaysOpen, BusinessCalendar, Calendar, build_calendar
from sla.clock import Clock, SystemClock
from sla.config import SlaConfig, load_sla_config
from sla.escalation import Escalator
from sla.exceptions import SlaError, StateConflict
from sla.metrics import SlaMetrics
from sla.service import SlaServiceSettings, run_sla, sla_service
from sla.state import AgentEvent, ConvState, SlaEngine
from sla.surge import SurgeDetector, SurgeWindows, erlang_b, erlang_c, slots_for_service_level
from sla.timers import TimerStore
from sla.worker import SlaWorker

__all__ = [
    "AgentDesk",
    "AgentEvent",
    "AlwaysOpen",
    "BusinessCalendar",
    "Calendar",
    "Clock",
    "ConvState",
    "Escalator",
    "SlaConfig",
    "SlaEngine",
    "SlaError",
    "SlaMetrics",
    "SlaServiceSettings",
    "SlaWorker",
    "StateConflict",
    "SurgeDetector",
    "SurgeWindows",
    "SystemClock",
    "TimerStore",
    "build_calendar",
    "erlang_b",
    "erlang_c",
    "load_sla_config",
    "run_sla",
    "sla_service",
    "slots_for_service_level",
]
