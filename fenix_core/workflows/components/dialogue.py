"""Names the dialogue with projects shares between the workflow base and
the components (no state: the deadlines are timers, one per project)."""

from __future__ import annotations

__all__ = ["DEADLINE", "deadline_timer"]

#: Timers named ``reply_deadline:<project>``: one per project (a project
#: awaits one answer at a time); asking it again moves its deadline.
DEADLINE = "reply_deadline:"


def deadline_timer(project_id: str) -> str:
    return DEADLINE + project_id
