"""A component's own persisted state: typed, constant in size, one row each."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar, Self

import attrs

from .errors import ContractError

__all__ = ["ComponentState"]


def _plain(_inst: Any, _field: Any, value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


@attrs.define(slots=True)
class ComponentState:
    """Base of every component's state (``@attrs.define`` subclasses).

    ``component`` is the row key; ``schema_version`` grows when the fields
    change, and ``from_json`` of a subclass converts older bodies. Fields are
    scalars or small fixed collections: per-host and per-instance facts live
    on the host and instance records, never here."""

    component: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("component"):
            raise ContractError(cls.__name__, "a ComponentState needs a `component` name")

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, value_serializer=_plain)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], version: int) -> Self:
        if version != cls.schema_version:
            raise ContractError(
                cls.component,
                f"stored state has schema version {version}, this code reads "
                f"{cls.schema_version} (override from_json to convert)",
            )
        names = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ContractError(cls.component, f"unknown field(s) in stored state: {unknown}")
        return cls(**data)
