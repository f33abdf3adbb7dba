"""A session request checked against the plug-ins that would run it.

The schema (:mod:`fenix_core.schema`) checks a request's shape; whether its
workflow, actions and gates exist depends on the plug-ins loaded. ``fenix
validate`` runs :func:`check_plugins` over the plug-ins a simulation of the
scenario registers, so an unknown name is caught before ``simulate``.
"""

from __future__ import annotations

from .errors import FieldError, InvalidInput
from .model import SessionRequest
from .plugins import Plugins

__all__ = ["check_plugins"]


def check_plugins(request: SessionRequest, plugins: Plugins) -> None:
    """Raise InvalidInput listing every workflow, action and gate name of
    ``request`` that ``plugins`` does not know (and what the workflow refuses)."""
    problems: list[FieldError] = []
    workflow = plugins.workflows.get(request.workflow)
    if workflow is None:
        known = ", ".join(sorted(plugins.workflows))
        problems.append(
            FieldError("workflow", f"unknown workflow {request.workflow!r}; known: {known}")
        )
    else:
        try:
            workflow.validate_request(request, plugins.actions)
        except InvalidInput as exc:
            problems.extend(exc.errors)
    for index, spec in enumerate(request.controls.gates):
        if spec.name not in plugins.gates:
            known = ", ".join(sorted(plugins.gates))
            problems.append(
                FieldError(
                    f"controls.gates[{index}].name", f"no gate named {spec.name!r}; known: {known}"
                )
            )
    if problems:
        raise InvalidInput.from_errors(problems)
