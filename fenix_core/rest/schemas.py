"""The HTTP bodies (pydantic models): they check the JSON's shape and types
and describe it in the OpenAPI document; the engine checks the meaning.

Models forbid unknown fields and do not coerce types ("2" is not 2), so a
typo or a wrong type is a 400 naming the field, never silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ActionBody",
    "GroupBody",
    "InstanceBody",
    "ProjectReplyBody",
    "SessionBody",
    "SessionUpdateBody",
    "SubscriptionBody",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ActionBody(_Body):
    plugin: str = Field(description="name of an action plug-in of the engine")
    type: str = Field(description="pre, host, compute, controller, post, or a workflow's own")
    order: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


class SessionBody(_Body):
    """Fenix v1 ``POST /v1/maintenance`` body, plus fenix-core's options."""

    hosts: list[str] = Field(default_factory=list, description="empty: every host")
    state: Literal["MAINTENANCE"] = "MAINTENANCE"
    maintenance_at: str | None = Field(None, description="ISO 8601; naive means UTC")
    metadata: dict[str, Any] = Field(default_factory=dict)
    workflow: str = Field("rolling", description='"default" (Fenix) means "rolling"')
    download: list[str] = Field(default_factory=list)
    actions: list[ActionBody] = Field(default_factory=list)
    project_policy: Literal["default", "fail"] | None = None
    reply_policy: Literal["fail", "default"] | None = None
    reply_windows: dict[str, float] | None = None
    timeouts: dict[str, float] | None = None
    max_migration_retries: int | None = None


class SessionUpdateBody(_Body):
    """``PUT /v1/maintenance/{session_id}``: move the start, or retry a failed
    session (``retry: true``, or Fenix's ``state: "MAINTENANCE"``)."""

    maintenance_at: str | None = None
    retry: bool | None = None
    state: Literal["MAINTENANCE"] | None = None


class ProjectReplyBody(_Body):
    """A project's reply. ``instance_actions`` maps instance ids to actions;
    Tacker-style ``instance_ids`` + ``instance_action`` gives one action to the
    listed instances. ``session_id`` / ``project_id``, if sent, must match the
    URL."""

    state: str
    instance_actions: dict[str, str] | None = None
    instance_ids: list[str] | None = None
    instance_action: str | None = None
    session_id: str | None = None
    project_id: str | None = None


class InstanceBody(_Body):
    """ETSI instance constraints; ``instance_id`` comes from the URL and
    ``project_id`` defaults to the caller's project."""

    instance_id: str | None = None
    project_id: str | None = None
    group_id: str | None = None
    instance_name: str | None = None
    max_interruption_time: int | None = None
    migration_type: (
        Literal["LIVE_MIGRATE", "MIGRATE", "OWN_ACTION", "EVICT", "MIGRATION", "LIVE_MIGRATION"]
        | None
    ) = Field(None, description='"MIGRATION" and "LIVE_MIGRATION" (older clients) are aliases')
    resource_mitigation: bool | None = None
    lead_time: int | None = None


class GroupBody(_Body):
    """ETSI instance-group constraints; ``group_id`` comes from the URL and
    ``project_id`` defaults to the caller's project."""

    group_id: str | None = None
    project_id: str | None = None
    group_name: str | None = None
    anti_affinity_group: bool | None = None
    max_instances_per_host: int | None = None
    max_impacted_members: int | None = None
    recovery_time: int | None = None
    resource_mitigation: bool | None = None


class SubscriptionBody(_Body):
    """Where a project wants ``maintenance.planned`` POSTed (replaces Fenix's
    AODH event alarm). ``event_type`` ``maintenance.scheduled`` is what Tacker
    listens to; ``body_shape`` ``event_alarm`` wraps the payload as AODH did."""

    url: str
    event_type: Literal["maintenance.planned", "maintenance.scheduled"] = "maintenance.planned"
    body_shape: Literal["fenix", "event_alarm"] = "fenix"
