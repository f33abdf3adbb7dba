"""The error a workflow meets when it breaks the contract."""

from __future__ import annotations

from ..errors import FenixError

__all__ = ["ContractError"]


class ContractError(FenixError):
    """A workflow asked for something the contract forbids. ``subject`` names
    what it was about (a host, an instance), ``rule`` the rule it broke; nothing
    of the refused call was recorded."""

    def __init__(self, subject: str, rule: str) -> None:
        super().__init__(f"{subject}: {rule}")
        self.subject = subject
        self.rule = rule
