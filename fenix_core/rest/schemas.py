"""The HTTP bodies (pydantic models): they check the JSON's shape and types
and describe it in the OpenAPI document; the engine checks the meaning. The
session bodies are :mod:`fenix_core.schema`'s models, the same the Python API
validates with.

Models forbid unknown fields and do not coerce types ("2" is not 2), so a
typo or a wrong type is a 400 naming the field, never silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..schema import ActionSchema, GroupRules, SessionRequestSchema, SessionUpdateSchema

__all__ = [
    "ActionBody",
    "ApproveBody",
    "ErrorBody",
    "ErrorDetail",
    "GroupBody",
    "InstanceBody",
    "ProjectReplyBody",
    "SessionBody",
    "SessionUpdateBody",
    "SubscriptionBody",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


#: The request shapes shared with the Python API and scenario files: one definition.
ActionBody = ActionSchema
SessionBody = SessionRequestSchema
SessionUpdateBody = SessionUpdateSchema


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


class GroupBody(GroupRules):
    """ETSI instance-group constraints; ``group_id`` comes from the URL and
    ``project_id`` defaults to the caller's project."""

    group_id: str | None = None
    project_id: str | None = None


class SubscriptionBody(_Body):
    """Where a project wants ``maintenance.planned`` POSTed (replaces Fenix's
    AODH event alarm). ``event_type`` ``maintenance.scheduled`` is what Tacker
    listens to; ``body_shape`` ``event_alarm`` wraps the payload as AODH did."""

    url: str
    event_type: Literal["maintenance.planned", "maintenance.scheduled"] = "maintenance.planned"
    body_shape: Literal["fenix", "event_alarm"] = "fenix"


class ApproveBody(_Body):
    """Approve a session's plan; ``plan_id``, if given, must be the plan the
    session holds now (the one the admin reviewed), else 409."""

    plan_id: str | None = Field(None, description="the plan reviewed (the view's approval.plan_id)")


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    type: str = Field(description="invalid_input, unauthorized, forbidden, not_found, conflict ...")
    field: str | None = Field(description="the offending field as a dotted path, or null")
    message: str
    errors: list[FieldProblem] | None = Field(
        None, description="every problem found, when the request had several (the first is field)"
    )
    plan_id: str | None = Field(
        None, description="an approval that re-planned (type replanned): the new plan to review"
    )
    changes: list[str] | None = Field(
        None, description="an approval that re-planned: what differed from the plan approved"
    )


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorDetail


# ---------------------------------------------------------------- answers
# What the session routes answer, for the OpenAPI description (the answers
# are the engine's views as JSON; a test keeps these fields equal to the
# views' attributes).


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostViewBody(_Answer):
    name: str
    type: str
    state: str
    started_at: str | None
    finished_at: str | None
    reason: str | None


class StuckWorkBody(_Answer):
    kind: str = Field(description="migration, own_action, action, host_up, gate")
    host: str | None
    instance_id: str | None
    detail: str
    since: str
    policy: str = Field(description="wait_and_notify, skip_host, fail, or default")


class ProgressBody(_Answer):
    hosts_done: int
    hosts_in_progress: int
    hosts_waiting: int
    hosts_skipped: int
    hosts_removed: int = Field(description="hosts that left the cloud while in the session")
    hosts_failed: int
    durations: dict[str, float] = Field(description="host -> seconds from start to back")
    estimated_end: str | None
    eta_seconds: float | None


class IgnoredConstraintBody(_Answer):
    kind: str
    ident: str
    project_id: str
    cloud_project_id: str


class ApprovalBody(_Answer):
    plan_id: str = Field(description="names this plan; approve with it to refuse a replaced one")
    planned_at: str
    plan: dict[str, Any] = Field(
        description="the preview: workflow, state, estimated_makespan_seconds, waves, hosts "
        '(or {"unavailable": why})'
    )
    changes: list[str] = Field(description="what differed from the previous plan (re-planned)")
    approved_at: str | None


class SessionViewBody(_Answer):
    """The session view (``engine.get_session``)."""

    session_id: str
    workflow: str
    state: str
    percent_done: int
    reason: str | None
    hosts: list[HostViewBody]
    projects: dict[str, str | None] = Field(description="project -> its dialogue state")
    created_at: str
    updated_at: str
    maintenance_at: str | None
    request: dict[str, Any] = Field(description="the session's request, every field")
    paused: bool
    waiting: str | None = Field(description="why no host starts now (window, pacing, gate)")
    stuck: list[StuckWorkBody]
    progress: ProgressBody | None
    ignored_constraints: list[IgnoredConstraintBody]
    approval: ApprovalBody | None = Field(
        description='the plan of a session created with approval: "required"'
    )


class SessionCreatedBody(_Answer):
    session_id: str
    state: str


class SessionListBody(_Answer):
    session_id: list[str] = Field(description="the ids, as Fenix listed them")
    sessions: list[SessionViewBody]
