"""SLA and surge metric names and the metric set, built on an injected registry."""

from __future__ import annotations

from typing import Final, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..router.events import SurgeType
from ..router.metrics import RELOAD_RESULTS

__all__ = ["SlaMetrics"]

# --- names (unit in the suffix; labels in brackets) ---------------------------
SLA_WARNINGS: Final = "omni_sla_warnings_total"  # warnings fired [skill_group, policy, timer]
SLA_BREACHES: Final = "omni_sla_breaches_total"  # breaches fired [skill_group, policy, timer]
SLA_ESCALATIONS: Final = "omni_sla_escalations_total"  # ladder rungs fired [skill_group, policy]
SLA_AT_RISK: Final = "omni_sla_at_risk_conversations"  # past warning, not breached [skill_group]
SLA_BREACHED_OPEN: Final = "omni_sla_breached_open_conversations"  # breached, open [skill_group]
SLA_OPEN: Final = "omni_sla_open_conversations"  # conversations with running timers [group]
SLA_FIRE_LAG: Final = "omni_sla_fire_lag_seconds"  # now - due of the last fired deadline
SLA_EVENTS: Final = "omni_sla_events_total"  # inputs consumed [topic, result]
SLA_CONFIG_VERSION: Final = "omni_sla_config_info"  # 1 for the active sla.yaml version [version]
SLA_CONFIG_RELOADS: Final = "omni_sla_config_reloads_total"  # sla.yaml reload attempts [result]
STAFFED_SLOTS: Final = "omni_staffed_slots"  # live agents' slots [skill_group]
SURGE_ACTIVE: Final = "omni_surge_active"  # 1 while a surge is on [scope]
SURGE_RATE: Final = "omni_surge_rate_per_minute"  # arrivals in the last window [scope]
SURGE_BASELINE: Final = "omni_surge_baseline_per_minute"  # learned EWMA baseline [scope]
SURGE_EXTRA_AGENTS: Final = "omni_surge_extra_agents_needed"  # Erlang C shortfall [scope]
SURGE_SIGNALS: Final = "omni_surge_signals_total"  # surge.start/clear/incident sent [type]
# the surge forecast (sla/forecast.py): its latest evaluation, exported by every SLA worker
FORECAST_WAIT: Final = "omni_forecast_predicted_wait_seconds"  # of an arrival now [skill_group]
FORECAST_BREACH_IN: Final = "omni_forecast_breach_in_seconds"  # to the first breach [skill_group]
FORECAST_RATE: Final = "omni_forecast_arrival_rate_per_minute"  # arrivals now [skill_group]
FORECAST_EXTRA_AGENTS: Final = "omni_forecast_extra_agents"  # for the peak, reserve in [group]


class SlaMetrics:
    """Metrics of the SLA worker. The reload results and every surge signal type are
    exported at 0 from the start, so ``increase()`` sees the first one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.config_info = Gauge(
            SLA_CONFIG_VERSION, "Active SLA configuration (sla.yaml)", ["version"],
            registry=registry,
        )
        self.config_reloads = Counter(
            SLA_CONFIG_RELOADS, "SLA configuration reloads", ["result"], registry=registry
        )
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        labels = ["skill_group", "policy", "timer"]
        self.warnings = Counter(SLA_WARNINGS, "SLA warnings fired", labels, registry=registry)
        self.breaches = Counter(SLA_BREACHES, "SLA breaches fired", labels, registry=registry)
        self.escalations = Counter(
            SLA_ESCALATIONS, "Escalation rungs fired", ["skill_group", "policy"],
            registry=registry,
        )
        self.at_risk = Gauge(
            SLA_AT_RISK, "Open conversations past a warning and not yet breached",
            ["skill_group"], registry=registry,
        )
        self.breached_open = Gauge(
            SLA_BREACHED_OPEN, "Open conversations with a breached timer", ["skill_group"],
            registry=registry,
        )
        self.open = Gauge(
            SLA_OPEN, "Conversations with running SLA timers", ["skill_group"], registry=registry
        )
        self.fire_lag = Gauge(
            SLA_FIRE_LAG, "Seconds between a deadline and its firing (last fired)",
            registry=registry,
        )
        self.events = Counter(
            SLA_EVENTS, "Records consumed by the SLA worker", ["topic", "result"],
            registry=registry,
        )
        self.staffed_slots = Gauge(
            STAFFED_SLOTS, "Concurrent slots of logged-in agents", ["skill_group"],
            registry=registry,
        )
        self.surge_active = Gauge(
            SURGE_ACTIVE, "1 while a surge is active", ["scope"], registry=registry
        )
        self.surge_rate = Gauge(
            SURGE_RATE, "Arrivals per minute in the last closed window", ["scope"],
            registry=registry,
        )
        self.surge_baseline = Gauge(
            SURGE_BASELINE, "EWMA baseline arrivals per minute", ["scope"], registry=registry
        )
        self.surge_extra_agents = Gauge(
            SURGE_EXTRA_AGENTS, "Extra agents needed to hold the SLA (Erlang C)", ["scope"],
            registry=registry,
        )
        self.surge_signals = Counter(
            SURGE_SIGNALS, "Surge signals produced", ["type"], registry=registry
        )
        for surge_type in get_args(SurgeType):
            self.surge_signals.labels(surge_type)
        self.forecast_wait = Gauge(
            FORECAST_WAIT, "Forecast: predicted wait of an arrival now (+Inf: the queue "
            "never drains)", ["skill_group"], registry=registry,
        )
        self.forecast_breach_in = Gauge(
            FORECAST_BREACH_IN, "Forecast: seconds to the first predicted SLA breach "
            "(+Inf: none within the horizon)", ["skill_group"], registry=registry,
        )
        self.forecast_rate = Gauge(
            FORECAST_RATE, "Forecast: estimated arrivals per minute now", ["skill_group"],
            registry=registry,
        )
        self.forecast_extra_agents = Gauge(
            FORECAST_EXTRA_AGENTS, "Forecast: agents to add for the projected peak "
            "(Erlang C, with the staffing reserve)", ["skill_group"], registry=registry,
        )
