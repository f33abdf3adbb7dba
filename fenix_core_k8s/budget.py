"""PodDisruptionBudget arithmetic and label selectors, as Kubernetes does them.

Pure functions on the JSON form of the objects (``{"matchLabels": ...}``),
shared by the driver (constraints from budgets) and the fake apiserver
(eviction accounting), and tested against the numbers of the Kubernetes
documentation.

Rounding: a percentage in ``minAvailable`` or ``maxUnavailable`` is scaled
against the number of pods the budget expects and **rounded up** (the
disruption controller calls ``GetScaledValueFromIntOrPercent(..., roundUp=true)``
for both), so ``maxUnavailable: 25%`` of 7 pods allows 2 disruptions and
``minAvailable: 50%`` of 3 pods keeps 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "desired_healthy",
    "max_unavailable",
    "scaled_value",
    "selector_matches",
]


def scaled_value(value: int | str, total: int) -> int:
    """An IntOrString of a budget: an absolute count, or ``"N%"`` of ``total`` rounded up."""
    if isinstance(value, bool):
        raise ValueError(f"not a count or a percentage: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = int(text[:-1])
        except ValueError:
            raise ValueError(f"not a percentage: {value!r}") from None
        return math.ceil(percent * total / 100)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not a count or a percentage: {value!r}") from None


def desired_healthy(spec: Mapping[str, Any], expected: int) -> int:
    """How many of ``expected`` pods must stay healthy under a budget ``spec``."""
    if spec.get("minAvailable") is not None:
        return min(expected, max(0, scaled_value(spec["minAvailable"], expected)))
    if spec.get("maxUnavailable") is not None:
        return max(0, expected - scaled_value(spec["maxUnavailable"], expected))
    # policy/v1 with neither field set: no pod may be disrupted voluntarily.
    return expected


def max_unavailable(spec: Mapping[str, Any], expected: int) -> int:
    """How many of ``expected`` pods a budget lets be unavailable at once (>= 0)."""
    return max(0, expected - desired_healthy(spec, expected))


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (``matchLabels`` + ``matchExpressions``) selects ``labels``.

    An empty selector selects everything, a missing one (None) nothing, as
    for PodDisruptionBudgets in policy/v1.
    """
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = set(expr.get("values") or ())
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown label selector operator {op!r}")
    return True
