"""Prometheus metric names and the metric sets, built on an injected registry.

Every process builds its metrics with ``RouterMetrics(registry)`` /
``AdapterMetrics(registry)``; tests hand in a fresh ``CollectorRegistry``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DEAD_LETTER_REASONS", "LATENCY_BUCKETS_S", "RELOAD_RESULTS", "AdapterMetrics",
           "RouterMetrics"]

# --- names (unit in the suffix; labels in brackets) ---------------------------
MESSAGES_IN: Final = "omni_messages_in_total"  # envelopes accepted for routing [channel]
DECISIONS: Final = "omni_decisions_total"  # routing decisions [skill_group, band]
DECISION_LATENCY: Final = "omni_decision_latency_seconds"  # received_at -> decided [channel]
DUPLICATES: Final = "omni_router_duplicates_total"  # replays the router deduplicated
DEAD_LETTERS: Final = "omni_dead_letters_total"  # records sent to omni.dead-letter [reason]
OVERFLOWS: Final = "omni_overflows_total"  # decisions sent to an overflow group [from_group]
RELAXATIONS: Final = "omni_relaxations_total"  # waited past relax_after_s [from_group, to_group]
QUEUE_DEPTH: Final = "omni_queue_depth"  # messages waiting per skill group [skill_group]
QUEUE_OLDEST_AGE: Final = "omni_queue_oldest_age_seconds"  # age of the oldest waiting [group]
BATCH_SIZE: Final = "omni_router_batch_records"  # records per consumed batch
CONSUMER_LAG: Final = "omni_router_consumer_lag_records"  # highwater - position [partition]
CONFIG_VERSION: Final = "omni_config_info"  # 1 for the active config version [version]
CONFIG_RELOADS: Final = "omni_config_reloads_total"  # reload attempts [result]

ADAPTER_REQUESTS: Final = "omni_adapter_requests_total"  # HTTP/SMTP requests [channel, account]
ADAPTER_ACCEPTED: Final = "omni_adapter_accepted_total"  # envelopes produced [channel, account]
ADAPTER_REJECTED: Final = "omni_adapter_rejected_total"  # refused input [channel, account, reason]
ADAPTER_DUPLICATES: Final = "omni_adapter_duplicates_total"  # channel retries [channel, account]
ADAPTER_FILTERED: Final = "omni_adapter_filtered_total"  # chatter kept off queues [channel, rule]
ADAPTER_SIGNALS: Final = "omni_adapter_signals_total"  # gifts/likes counted [channel, kind]
ADAPTER_PII_MASKED: Final = "omni_adapter_pii_masked_total"  # masked values [channel, kind]
ADAPTER_ACK_LATENCY: Final = "omni_adapter_ack_latency_seconds"  # request -> broker ack [channel]

#: Every ``reason`` label of DEAD_LETTERS (router/worker.py's ``_reason`` kinds).
DEAD_LETTER_REASONS: Final = ("decode_failed", "invalid_envelope", "decide_failed")
#: Every ``result`` label of a config reload counter.
RELOAD_RESULTS: Final = ("applied", "rejected")

LATENCY_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


class RouterMetrics:
    """Metrics of the router worker.

    Counters whose label values are known in advance (reload results, dead-letter
    reasons; the groups and relaxation hops of the configuration, see :meth:`prepare`)
    are exported at 0 from the start, so ``rate()`` and ``increase()`` see the first
    event and the dashboard has a series before anything went wrong.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_in = Counter(
            MESSAGES_IN, "Envelopes consumed for routing", ["channel"], registry=registry
        )
        self.decisions = Counter(
            DECISIONS, "Routing decisions", ["skill_group", "band"], registry=registry
        )
        self.decision_latency = Histogram(
            DECISION_LATENCY,
            "Seconds from adapter receipt to routing decision",
            ["channel"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.duplicates = Counter(DUPLICATES, "Replayed messages already routed", registry=registry)
        self.dead_letters = Counter(
            DEAD_LETTERS, "Records sent to the dead-letter topic", ["reason"], registry=registry
        )
        self.overflows = Counter(
            OVERFLOWS, "Decisions diverted to an overflow group", ["from_group"], registry=registry
        )
        self.relaxations = Counter(
            RELAXATIONS, "Messages moved to the next fallback after waiting too long",
            ["from_group", "to_group"], registry=registry,
        )
        self.queue_depth = Gauge(
            QUEUE_DEPTH, "Messages waiting per skill group", ["skill_group"], registry=registry
        )
        self.queue_oldest_age = Gauge(
            QUEUE_OLDEST_AGE,
            "Seconds the oldest waiting message has waited",
            ["skill_group"],
            registry=registry,
        )
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Records per consumed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=registry,
        )
        self.consumer_lag = Gauge(
            CONSUMER_LAG,
            "Records of omni.inbound not yet consumed by this worker (highwater - position)",
            ["partition"], registry=registry,
        )
        self.config_info = Gauge(
            CONFIG_VERSION, "Active routing configuration", ["version"], registry=registry
        )
        self.config_reloads = Counter(
            CONFIG_RELOADS, "Configuration reloads", ["result"], registry=registry
        )
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)

    def prepare(self, groups: Iterable[str], relax_hops: Iterable[tuple[str, str]]) -> None:
        """Export at 0 the overflow counter of every skill group and the relaxation
        counter of every hop (``target -> fallback``) of a relaxing rule, for a
        configuration just loaded (series of an earlier configuration stay)."""
        for group in groups:
            self.overflows.labels(group)
        for from_group, to_group in relax_hops:
            self.relaxations.labels(from_group, to_group)


class AdapterMetrics:
    """Metrics of the channel edge (HTTP ingest, SMTP, IMAP)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            ADAPTER_REQUESTS, "Inbound requests", ["channel", "account"], registry=registry
        )
        self.accepted = Counter(
            ADAPTER_ACCEPTED, "Envelopes produced to Kafka", ["channel", "account"],
            registry=registry,
        )
        self.rejected = Counter(
            ADAPTER_REJECTED, "Refused input by reason", ["channel", "account", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            ADAPTER_DUPLICATES, "Channel retries dropped as duplicates", ["channel", "account"],
            registry=registry,
        )
        self.filtered = Counter(
            ADAPTER_FILTERED, "Chatter kept off agent queues", ["channel", "rule"],
            registry=registry,
        )
        self.signals = Counter(
            ADAPTER_SIGNALS, "Non-routable events counted (gifts, likes)", ["channel", "kind"],
            registry=registry,
        )
        self.pii_masked = Counter(
            ADAPTER_PII_MASKED, "PII values masked before produce", ["channel", "kind"],
            registry=registry,
        )
        self.ack_latency = Histogram(
            ADAPTER_ACK_LATENCY,
            "Seconds from request receipt to broker acknowledgement",
            ["channel"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
