"""Topic administration: the embedded broker creates no topic on first use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from .router import topics
from .router.settings import Settings

__all__ = ["ensure_topics"]


async def ensure_topics(settings: Settings, names: Iterable[str] = topics.ALL_TOPICS) -> list[str]:
    """Create the project's topics (prefixed) where missing; return the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(n) for n in names]
        missing = [t for t in wanted if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(
                    [NewTopic(t, settings.topic_partitions, 1) for t in missing]
                )
        return missing
    finally:
        await admin.close()
