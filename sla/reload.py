"""Hot reload of ``sla.yaml`` (SIGHUP or a changed file), between ticks and batches.

The same behaviour as the routing configuration's (router/reload.py): a change is
validated in full before it becomes active; an invalid one is logged and counted,
and the old version keeps running. The version is the file's ``version`` label
plus a hash of its bytes, so an edit that forgets the label still shows.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .config import SlaConfig, load_sla_config
from .exceptions import ConfigError
from .metrics import SlaMetrics

__all__ = ["SlaConfigHolder"]

log = logging.getLogger(__name__)


def _version(config: SlaConfig, path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return f"{config.version}+{digest}"


class SlaConfigHolder:
    """Holds the active :class:`SlaConfig`; a reload swaps it, a bad file keeps the old one.

    Args:
        path: ``sla.yaml``; None holds ``config`` for good (tests, embedding).
        metrics: ``omni_sla_config_info`` and ``omni_sla_config_reloads_total``.
        config: The configuration to start with instead of reading ``path``.

    Raises:
        ConfigError: ``path`` is invalid at start (there is no old version to keep).
    """

    def __init__(self, path: Path | None, metrics: SlaMetrics | None = None,
                 *, config: SlaConfig | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.metrics = metrics
        if config is None:
            if self.path is None:
                raise ConfigError("SlaConfigHolder needs a path or a config")
            config = load_sla_config(self.path)
            self._version = _version(config, self.path)
        else:
            self._version = config.version
        self._config = config
        self._stamp = self._mtime()
        self._publish(None)

    def __call__(self) -> SlaConfig:
        return self._config

    @property
    def version(self) -> str:
        """Version of the active configuration (label + hash of the file)."""
        return self._version

    def _mtime(self) -> float:
        if self.path is None:
            return -1.0
        try:
            return self.path.stat().st_mtime
        except OSError:
            return -1.0

    def _publish(self, old: str | None) -> None:
        if self.metrics is None:
            return
        if old is not None:
            self.metrics.config_info.remove(old)
        self.metrics.config_info.labels(self.version).set(1)

    def reload(self) -> bool:
        """Read ``sla.yaml`` again; True if a new version became active."""
        if self.path is None:
            return False
        self._stamp = self._mtime()
        try:
            config = load_sla_config(self.path)
            version = _version(config, self.path)
        except (ConfigError, OSError) as exc:
            log.error("sla.yaml reload rejected, keeping %s:\n%s", self.version, exc)
            if self.metrics is not None:
                self.metrics.config_reloads.labels("rejected").inc()
            return False
        old = self.version
        if version == old:
            return False
        self._config, self._version = config, version
        self._publish(old)
        if self.metrics is not None:
            self.metrics.config_reloads.labels("applied").inc()
        log.info("SLA configuration %s -> %s", old, version)
        return True

    def reload_if_changed(self) -> bool:
        """Reload when the file's modification time changed."""
        if self._mtime() == self._stamp:
            return False
        return self.reload()
