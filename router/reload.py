"""Hot reload of the routing configuration (SIGHUP or a changed file), between batches."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from pathlib import Path

from ..skills.config import WATCHED_FILES, load_config
from ..skills.rules import Rule
from .exceptions import ConfigError
from .metrics import RouterMetrics
from .pipeline import Pipeline

__all__ = ["PipelineHolder", "relax_hops"]

log = logging.getLogger(__name__)


def relax_hops(rules: Iterable[Rule]) -> list[tuple[str, str]]:
    """Every ``(from_group, to_group)`` a relaxing rule can move a message along."""
    hops: list[tuple[str, str]] = []
    for rule in rules:
        if rule.relax_after_s is not None and rule.fallbacks:
            chain = (rule.target, *rule.fallbacks)
            hops += [h for h in itertools.pairwise(chain) if h not in hops]
    return hops


class PipelineHolder:
    """Holds the active Pipeline; a reload swaps it atomically, a bad file keeps the old one."""

    def __init__(self, directory: Path, metrics: RouterMetrics | None = None) -> None:
        self.directory = Path(directory)
        self.metrics = metrics
        self._pipeline = Pipeline(load_config(self.directory))
        self._stamp = self._mtimes()
        self._publish(None)

    def __call__(self) -> Pipeline:
        return self._pipeline

    @property
    def version(self) -> str:
        """Version of the active configuration."""
        return self._pipeline.config.version

    def _mtimes(self) -> tuple[float, ...]:
        out = []
        for name in WATCHED_FILES:
            try:
                out.append((self.directory / name).stat().st_mtime)
            except OSError:
                out.append(-1.0)
        return tuple(out)

    def _publish(self, old: str | None) -> None:
        if self.metrics is None:
            return
        if old is not None:
            self.metrics.config_info.remove(old)
        self.metrics.config_info.labels(self.version).set(1)
        config = self._pipeline.config
        self.metrics.prepare(config.groups.groups, relax_hops(config.routing.rules))

    def reload(self) -> bool:
        """Load the directory again; True if a new version became active."""
        self._stamp = self._mtimes()
        try:
            pipeline = Pipeline(load_config(self.directory))
        except ConfigError as exc:
            log.error("config reload rejected, keeping %s:\n%s", self.version, exc)
            if self.metrics is not None:
                self.metrics.config_reloads.labels("rejected").inc()
            return False
        old = self.version
        if pipeline.config.version == old:
            return False
        self._pipeline = pipeline
        self._publish(old)
        if self.metrics is not None:
            self.metrics.config_reloads.labels("applied").inc()
        log.info("routing configuration %s -> %s", old, self.version)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when a file's modification time changed."""
        if self._mtimes() == self._stamp:
            return False
        return self.reload()
