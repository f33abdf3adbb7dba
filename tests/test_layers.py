"""The import rules between fenix_core's layers, read from the source (every
import, at module level or inside a function, TYPE_CHECKING ones included).

Each rule holds today; where today's code breaks the rule of the core
redesign (issue 18), the exceptions are listed by name below so the redesign
can only shrink them: a new import across a layer fails here."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fenix_core"

#: Modules of fenix_core.workflows that reach into the store's ORM rows
#: today (the redesign's workflows see only fenix_core.contract).
WORKFLOWS_USING_THE_SCHEMA = frozenset(
    {
        "fenix_core.workflows.base",
        "fenix_core.workflows.constrained",
        "fenix_core.workflows.controlled",
        "fenix_core.workflows.lifecycle",
        "fenix_core.workflows.rolling",
    }
)

#: Import circles of today, each as the sorted modules it goes through.
KNOWN_CIRCLES = frozenset(
    {
        ("fenix_core.workflows.base", "fenix_core.workflows.controlled"),
        ("fenix_core.workflows.base", "fenix_core.workflows.lifecycle"),
    }
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> Iterator[str]:
    """Absolute names of every module ``path`` imports (``from a import b``
    yields ``a.b`` when that is a module of the package, else ``a``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in MODULES else base


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {
    module_name(p): {m for m in imported(p) if m in MODULES or m.split(".")[0] != "fenix_core"}
    for p in PACKAGE.rglob("*.py")
}


def internal(module: str) -> set[str]:
    return {m for m in GRAPH[module] if m in MODULES}


def test_the_parser_sees_known_imports() -> None:
    # guards the rules below against a parser that sees nothing
    assert "fenix_core.workflows.base" in internal("fenix_core.plugins")  # from .workflows.base
    assert "fenix_core.store.schema" in internal("fenix_core.runtime")  # from .store.schema
    assert "pluggy" in GRAPH["fenix_core.plugins"]


def test_fenix_core_never_imports_the_cloud_plugins() -> None:
    offenders = {
        module: sorted(
            m for m in imports if m.split(".")[0] in ("fenix_core_openstack", "fenix_core_k8s")
        )
        for module, imports in GRAPH.items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_workflows_reach_the_schema_only_where_they_do_today() -> None:
    users = {
        module
        for module in MODULES
        if module.startswith("fenix_core.workflows.")
        and "fenix_core.store.schema" in internal(module)
    }
    assert users <= WORKFLOWS_USING_THE_SCHEMA, sorted(users - WORKFLOWS_USING_THE_SCHEMA)
    # a module that stopped using it must leave the list, so the list only shrinks
    assert users == WORKFLOWS_USING_THE_SCHEMA, sorted(WORKFLOWS_USING_THE_SCHEMA - users)


def test_workflows_never_import_the_engine_or_the_front_ends() -> None:
    above = ("fenix_core.engine", "fenix_core.cli", "fenix_core.rest", "fenix_core.testing")
    found = {
        module: sorted(m for m in internal(module) if m.startswith(above))
        for module in MODULES
        if module.startswith("fenix_core.workflows")
    }
    assert {m: i for m, i in found.items() if i} == {}


def test_pure_modules_do_no_io() -> None:
    io = ("sqlalchemy", "fenix_core.store", "fenix_core.engine", "httpx", "socket", "blinker")
    for module in (
        "fenix_core.planner",
        "fenix_core.constraints",
        "fenix_core.states",
        "fenix_core.placement_rules",
        "fenix_core.model",
        "fenix_core.errors",
        "fenix_core.snapshot",
        "fenix_core.preview",
    ):
        assert not sorted(m for m in GRAPH[module] if m.startswith(io)), module


def circles() -> set[tuple[str, ...]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(internal(node)):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for node in sorted(MODULES):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_but_the_known_one() -> None:
    known = {m for circle in KNOWN_CIRCLES for m in circle}
    for circle in circles():
        assert set(circle) <= known, f"new import circle: {circle}"
    direct = {
        tuple(sorted((a, b))) for a in MODULES for b in internal(a) if a in internal(b) and a != b
    }
    assert direct == set(KNOWN_CIRCLES)


@pytest.mark.parametrize("circle", sorted(KNOWN_CIRCLES))
def test_each_known_circle_still_exists(circle: tuple[str, ...]) -> None:
    # once the redesign breaks one, it must leave KNOWN_CIRCLES
    a, b = circle
    assert b in internal(a)
    assert a in internal(b)


# ------------------------------------------------------------------ the redesign's packages

#: What the contract may import of fenix_core (plan §1): pure modules only.
CONTRACT_MAY_IMPORT = (
    "fenix_core.contract",
    "fenix_core.model",
    "fenix_core.states",
    "fenix_core.errors",
    "fenix_core.clock",
    "fenix_core.placement_rules",
    "fenix_core.constraints",
)


def test_the_contract_imports_only_pure_modules() -> None:
    found = {
        module: sorted(m for m in internal(module) if not m.startswith(CONTRACT_MAY_IMPORT))
        for module in MODULES
        if module.startswith("fenix_core.contract")
    }
    assert found, "no fenix_core.contract modules found"
    assert {m: i for m, i in found.items() if i} == {}
    io = ("sqlalchemy", "pluggy", "blinker", "httpx", "socket")
    for module in found:
        assert not [m for m in GRAPH[module] if m.startswith(io)], module


def test_the_ports_import_only_the_contract() -> None:
    assert internal("fenix_core.core.ports") <= {
        m for m in MODULES if m.startswith("fenix_core.contract")
    }


def test_todays_engine_does_not_use_the_new_packages_yet() -> None:
    users = {
        module
        for module in MODULES
        if not module.startswith(("fenix_core.contract", "fenix_core.core"))
        and any(m.startswith(("fenix_core.contract", "fenix_core.core")) for m in internal(module))
    }
    # The engine builds a new session's rows with the core's pure factory, and
    # today's runtime the rows that appear later with the same pure record
    # builders (one copy each); the reply intake (core/replies.py) is wired
    # into today's engine through its inbox adapter. Nothing else of today's
    # engine uses the new packages before the cut-over, except the workflows
    # written again on the contract, which live beside today's
    # (fenix_core.workflows.v2) until the cut-over replaces them. Both
    # engines call the one constraint service (core/constraint_service.py).
    assert {u for u in users if not u.startswith("fenix_core.workflows.v2")} == {
        "fenix_core.testing.contract",
        "fenix_core.engine",
        "fenix_core.runtime",
        "fenix_core.reply_inbox",
    }
    new = ("fenix_core.contract", "fenix_core.core")
    assert {m for m in internal("fenix_core.engine") if m.startswith(new)} == {
        "fenix_core.core.busy_hosts",  # one rule for hosts held by running sessions
        "fenix_core.core.constraint_service",
        "fenix_core.core.factory",
        "fenix_core.core.ports",  # the factory's NewSession, written by the engine
        "fenix_core.core.records",
        "fenix_core.core.replies",
    }
    assert {m for m in internal("fenix_core.runtime") if m.startswith(new)} == {
        "fenix_core.core.records"
    }


#: What the workflows on the contract may import of fenix_core (plan §1).
V2_WORKFLOW_IMPORTS = (
    "fenix_core.contract",
    "fenix_core.workflows.v2",
    "fenix_core.model",
    "fenix_core.states",
    "fenix_core.errors",
    "fenix_core.planner",
    "fenix_core.second_moves",  # pure: when an instance may move twice
    "fenix_core.placement_rules",
    "fenix_core.constraints",
    "fenix_core.controls",
)


def test_workflows_on_the_contract_import_no_engine_store_or_runtime() -> None:
    found = [m for m in MODULES if m.startswith("fenix_core.workflows.v2")]
    assert found, "no fenix_core.workflows.v2 modules found"
    for module in found:
        bad = sorted(
            m
            for m in internal(module)
            if not m.startswith(V2_WORKFLOW_IMPORTS)
            and m not in ("fenix_core", "fenix_core.workflows")
        )
        assert not bad, f"{module} imports {bad}"
