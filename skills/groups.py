"""Skill groups: the agent teams messages are routed to (config/skill_groups.yaml)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GroupId", "SkillGroup", "SkillGroups"]

GroupId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class SkillGroup(BaseModel):
    """One agent team."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="display name")
    agents: int = Field(ge=0, description="agents staffed in normal hours")
    slots_per_agent: int = Field(1, ge=1, le=50, description="concurrent conversations per agent")
    max_queue: int = Field(ge=1, description="queue length above which messages overflow")
    overflow: GroupId | None = Field(None, description="group that takes the overflow")
    senior: GroupId | None = Field(None, description="escalation target on SLA breach")
    calendar: str = Field("default", description="business calendar id (see config/sla.yaml)")

    @property
    def capacity(self) -> int:
        """Concurrent conversations the staffed team can hold."""
        return self.agents * self.slots_per_agent


class SkillGroups(BaseModel):
    """The file config/skill_groups.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: dict[GroupId, SkillGroup] = Field(min_length=1)
