"""The bodies POSTed to webhooks, built from the engine's signal payloads.

Two shapes, as a subscription chooses:

* ``"fenix"``: the Fenix v1 payload itself (``{service, session_id, project_id,
  state, instance_ids, reply_url, ...}``);
* ``"event_alarm"``: what an AODH event alarm POSTs to its ``alarm_actions``
  URL, which is what Fenix-era managers (Tacker, the Fenix sample VNFM) parse:
  the payload's fields are ``reason_data.event.traits`` as
  ``[name, type, value]`` triples.

In both, ``reply_url`` of ``maintenance.planned`` is a URL of this API
(``PUT`` replies there). ``instance_ids`` is what Fenix and its managers
used: for the project-wide questions (``MAINTENANCE``, ``SCALE_IN``,
``MAINTENANCE_COMPLETE``) the same URL (``GET`` lists the instances); for the
states about particular instances (``PREPARE_MAINTENANCE``,
``PLANNED_MAINTENANCE``, ``INSTANCE_ACTION_DONE``, ``ADMIN_ACTION_DONE``) the
list of their ids, which managers written for Fenix (the OPNFV Doctor VNFM,
Tacker's Fenix plug-in) read as ``instance_ids[0]``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "BODY_SHAPES",
    "EVENT_TYPES",
    "LINKED_STATES",
    "PROJECT_EVENT_TYPES",
    "BodyShape",
    "event_alarm_body",
    "fenix_body",
    "project_url",
]

#: Signal name -> Fenix event type.
EVENT_TYPES: Mapping[str, str] = {
    "maintenance_planned": "maintenance.planned",
    "maintenance_host": "maintenance.host",
    "maintenance_session": "maintenance.session",
}
#: What a project may subscribe to: Fenix's name, and the name Tacker's
#: event alarm listens to for the same notification.
PROJECT_EVENT_TYPES = ("maintenance.planned", "maintenance.scheduled")
#: ``maintenance.planned`` states whose ``instance_ids`` is the URL listing the
#: project's instances, as Fenix sent them; the others carry the list itself.
LINKED_STATES = frozenset({"MAINTENANCE", "SCALE_IN", "MAINTENANCE_COMPLETE"})
BodyShape = Literal["fenix", "event_alarm"]
BODY_SHAPES: tuple[BodyShape, ...] = ("fenix", "event_alarm")

# AODH trait types.
_TEXT, _INT, _FLOAT = 1, 2, 3
_NAMESPACE = uuid.UUID("6f1c1a8e-52a4-4c1f-9a55-3f6b3c2d7e10")


def project_url(public_url: str, session_id: str, project_id: str) -> str:
    """The project resource of a session: GET lists instances, PUT replies."""
    return f"{public_url.rstrip('/')}/v1/maintenance/{session_id}/{project_id}"


def fenix_body(signal: str, payload: Mapping[str, Any], public_url: str) -> dict[str, Any]:
    """The Fenix v1 payload of a notification, with links into this API."""
    body = dict(payload)
    if signal != "maintenance_planned":
        return body
    url = project_url(public_url, str(payload["session_id"]), str(payload["project_id"]))
    if payload.get("state") in LINKED_STATES:
        body["instance_ids"] = url
    else:
        body["instance_ids"] = list(payload.get("instance_ids") or [])
    body["reply_url"] = url
    return body


def event_alarm_body(
    event_type: str, body: Mapping[str, Any], *, alarm_owner: str, now: datetime | None = None
) -> dict[str, Any]:
    """``body`` (a :func:`fenix_body`) wrapped as an AODH event alarm.

    ``alarm_owner`` (the project, or the URL for admin hooks) makes the alarm
    id stable across notifications, as one alarm per project was in Fenix.
    """
    generated = (now or datetime.now(UTC)).isoformat()
    message_id = str(
        uuid.uuid5(_NAMESPACE, f"{body.get('session_id')}/{body.get('seq')}/{alarm_owner}")
    )
    alarm_id = str(uuid.uuid5(_NAMESPACE, f"{event_type}/{alarm_owner}"))
    traits = [_trait(name, value) for name, value in body.items() if value is not None]
    return {
        "alarm_id": alarm_id,
        "alarm_name": f"{event_type}:{alarm_owner}",
        "severity": "moderate",
        "previous": "alarm",
        "current": "alarm",
        "reason": f"Event <id={message_id},event_type={event_type}> hits the query",
        "reason_data": {
            "type": "event",
            "event": {
                "message_id": message_id,
                "event_type": event_type,
                "generated": generated,
                "traits": traits,
                "raw": {},
            },
        },
    }


def _trait(name: str, value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [name, _TEXT, json.dumps(value)]
    if isinstance(value, int):
        return [name, _INT, value]
    if isinstance(value, float):
        return [name, _FLOAT, value]
    if isinstance(value, str):
        return [name, _TEXT, value]
    # Lists and objects travel as JSON text, as event traits only hold scalars.
    return [name, _TEXT, json.dumps(value, sort_keys=True)]
