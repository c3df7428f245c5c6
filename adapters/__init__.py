"""Channel edge: verify, parse, normalise, mask PII, dedupe, produce to Kafka.

Each channel is a subpackage with the same role-named modules
(``config``, ``verify``, ``parse``, ``adapter``; WeCom has only ``config`` and
``adapter`` and uses WeChat's verify and parse); what they share sits beside them
(``channel_config`` for ``channels.yaml``, ``dedupe``, ``pii``, ``text``, ``http``).
The shared HTTP context, errors and producer are message-contract pieces and live
in ``router``.
"""

from .http import build_http_app, channel_installers, ingest_readiness

__all__ = ["build_http_app", "channel_installers", "ingest_readiness"]
