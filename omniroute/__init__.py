"""omniroute: an event-driven omnichannel message router for customer service.

The import namespace of the whole distribution. Its packages, lowest layer first:
``omniroute.skills`` (decision logic), ``omniroute.router`` (message contracts and the
routing worker), ``omniroute.adapters`` (channel edge) and ``omniroute.sla`` (SLA
worker, surge, agent API). The modules directly in this package (cli, node, demo,
bench, ...) are the composition root: they may import everything, nothing imports
them. Importing this package does nothing else.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("omniroute")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
