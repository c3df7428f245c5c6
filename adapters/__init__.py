"""Channel edge: verify, parse, normalise, mask PII, dedupe, produce to Kafka.

Each channel is a subpackage with the same role-named modules
(``config``, ``verify``, ``parse``, ``adapter``); what they share sits beside them
(``dedupe``, ``pii``, ``http``). The shared HTTP context, errors and producer are
message-contract pieces and live in ``router``.
"""

from .http import build_http_app, channel_installers, ingest_readiness

__all__ = ["build_http_app", "channel_installers", "ingest_readiness"]
