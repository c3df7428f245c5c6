"""Generic JSON ingest: ``POST /v1/messages`` (app chat, CRM, anything else)."""

from adapters.generic.adapter import install
from adapters.generic.parse import IngestMessage, parse_body

__all__ = ["IngestMessage", "install", "parse_body"]
