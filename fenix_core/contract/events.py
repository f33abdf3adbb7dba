"""What the workflow hooks receive besides the context."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs

__all__ = ["ProjectReply", "ReplyOutcome", "TimerFired"]


@attrs.frozen
class ProjectReply:
    project_id: str
    state: str  # ACK_x / NACK_x, normalised
    instance_actions: Mapping[str, str]
    received_at: datetime


@attrs.frozen
class ReplyOutcome:
    """What the workflow made of a reply (stored as the inbox row's outcome)."""

    accepted: bool
    why: str | None = None


@attrs.frozen
class TimerFired:
    name: str
    due: datetime
    data: Mapping[str, str] = attrs.field(factory=dict)
