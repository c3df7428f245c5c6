"""WeCom callback XML -> Envelope: WeChat's parser; ``AgentID`` lands in ``meta.agent_id``."""

from ..wechat.parse import Inbound, parse_xml, to_envelope

__all__ = ["Inbound", "parse_xml", "to_envelope"]
