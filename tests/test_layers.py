"""The import rules between fenix_core's layers, read from the source (every
import, at module level or inside a function, TYPE_CHECKING ones included).

The layers, from the bottom: the pure modules (model, states, planner,
constraints ...); the workflow contract (fenix_core.contract); the workflows
(only the contract and pure modules); the plug-in API, manager and gates
(fenix_core.plugins); the core (fenix_core.core: store, stepper, runner,
outbox); the public facade (fenix_core.engine); the simulator
(fenix_core.sim); the front ends (cli, rest). No module imports a layer
above its own, and there is no import circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fenix_core"


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
    assert "fenix_core.contract" in internal("fenix_core.plugins.manager")  # from .contract import
    assert "fenix_core.store.schema" in internal("fenix_core.views")  # from .store.schema
    assert "pluggy" in GRAPH["fenix_core.plugins.manager"]


def test_fenix_core_never_imports_the_cloud_plugins() -> None:
    offenders = {
        module: sorted(
            m for m in imports if m.split(".")[0] in ("fenix_core_openstack", "fenix_core_k8s")
        )
        for module, imports in GRAPH.items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


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
        "fenix_core.sim.snapshot",
        "fenix_core.sim.preview",
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


def test_no_import_circles() -> None:
    assert circles() == set()


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


def test_the_core_never_imports_the_front_ends_or_the_public_facade() -> None:
    above = ("fenix_core.engine", "fenix_core.cli", "fenix_core.rest", "fenix_core.sim")
    found = {
        module: sorted(m for m in internal(module) if m.startswith(above))
        for module in MODULES
        if module.startswith("fenix_core.core")
    }
    assert {m: i for m, i in found.items() if i} == {}


#: What the workflows may import of fenix_core (plan §1).
WORKFLOW_IMPORTS = (
    "fenix_core.contract",
    "fenix_core.workflows",
    "fenix_core.model",
    "fenix_core.states",
    "fenix_core.errors",
    "fenix_core.planner",
    "fenix_core.second_moves",  # pure: when an instance may move twice
    "fenix_core.placement_rules",
    "fenix_core.constraints",
    "fenix_core.controls",
)


def test_workflows_import_only_the_contract_and_pure_modules() -> None:
    found = [m for m in MODULES if m.startswith("fenix_core.workflows")]
    assert found, "no fenix_core.workflows modules found"
    for module in found:
        bad = sorted(
            m
            for m in internal(module)
            if not m.startswith(WORKFLOW_IMPORTS)
            and m not in ("fenix_core", "fenix_core.workflows")
        )
        assert not bad, f"{module} imports {bad}"


# ------------------------------------------------------------------ plugins/ and sim/


def test_nothing_below_the_front_ends_imports_the_simulator() -> None:
    """sim/ runs an Engine of its own: only the front ends, the package root
    (which sets its previewer as the engine's default) and sim/ itself
    import it; the engine, the core, the workflows and the plug-ins never."""
    allowed = ("fenix_core.sim", "fenix_core.cli", "fenix_core.rest")
    users = {
        module: sorted(m for m in internal(module) if m.startswith("fenix_core.sim"))
        for module in MODULES
        if module != "fenix_core" and not module.startswith(allowed)
    }
    assert "fenix_core.sim.simulation" in internal("fenix_core.cli.main")  # the parser sees it
    assert {m: i for m, i in users.items() if i} == {}


def test_the_plugins_package_imports_no_core_store_engine_or_front_end() -> None:
    above = (
        "fenix_core.core",
        "fenix_core.store",
        "fenix_core.engine",
        "fenix_core.sim",
        "fenix_core.cli",
        "fenix_core.rest",
        "fenix_core.testing",
    )
    found = {
        module: sorted(m for m in internal(module) if m.startswith(above))
        for module in MODULES
        if module.startswith("fenix_core.plugins")
    }
    assert set(found) >= {
        "fenix_core.plugins.hookspecs",
        "fenix_core.plugins.manager",
        "fenix_core.plugins.gates",
    }
    assert {m: i for m, i in found.items() if i} == {}


def test_plug_ins_import_the_hook_specs_by_their_documented_name() -> None:
    import fenix_core.hookspecs as public
    import fenix_core.plugins.hookspecs as defined

    assert public.__all__ == defined.__all__
    assert all(getattr(public, name) is getattr(defined, name) for name in defined.__all__)


# ------------------------------------------------------------------ migrations

MIGRATIONS = "fenix_core.store.migrations"


def test_migrations_import_nothing_of_fenix_core_outside_their_package() -> None:
    """A migration runs on databases long after it was written, on the code of
    a later release: what it needs of the code is frozen into its own modules
    (release_frozen.py for 0008). env.py is Alembic's runner, not a
    migration: it reads the live schema for ``alembic revision --autogenerate``."""
    found = {
        module: sorted(
            m
            for m in internal(module)
            if m.startswith("fenix_core") and not m.startswith(MIGRATIONS)
        )
        for module in MODULES
        if module.startswith(MIGRATIONS) and module != f"{MIGRATIONS}.env"
    }
    assert f"{MIGRATIONS}.versions.0008_core_state" in found
    assert f"{MIGRATIONS}.release_frozen" in internal(f"{MIGRATIONS}.versions.0008_core_state")
    assert {m: i for m, i in found.items() if i} == {}
