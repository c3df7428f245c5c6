"""SLA timers, escalation, business calendars, surge and incident detection.

Wiring (see docs/sla.md): ``SlaWorker(settings, registry, clock)`` is the service;
``sla.agent_api.install`` adds the agent API to the HTTP app (the composition root,
``omniroute.node``, installs it beside the channel adapters).
"""

from ..router.clock import Clock, SystemClock
from ..router.events import AgentEvent
from .agents import AgentDesk
from .calendar import AlwaysOpen, BusinessCalendar, Calendar, build_calendar
from .config import SlaConfig, load_sla_config
from .escalation import Escalator
from .exceptions import SlaError, StateConflict
from .metrics import SlaMetrics
from .service import run_sla, sla_service
from .state import ConvState, SlaEngine
from .surge import SurgeDetector, SurgeWindows, erlang_b, erlang_c, slots_for_service_level
from .timers import TimerStore
from .worker import SlaWorker

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
