"""Building the core/v1 Events fenix-core records (evictions, node maintenance)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from kubernetes.client import CoreV1Event, V1EventSource, V1ObjectMeta, V1ObjectReference

__all__ = ["COMPONENT", "event"]

COMPONENT = "fenix-core"


def event(
    *,
    name: str,
    about: V1ObjectReference,
    reason: str,
    message: str,
    now: datetime,
    annotations: Mapping[str, str] | None = None,
) -> CoreV1Event:
    """A Normal event about ``about``, reported by fenix-core at ``now``."""
    return CoreV1Event(
        metadata=V1ObjectMeta(name=name, annotations=dict(annotations) if annotations else None),
        involved_object=about,
        reason=reason,
        message=message,
        type="Normal",
        source=V1EventSource(component=COMPONENT),
        reporting_component=COMPONENT,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
