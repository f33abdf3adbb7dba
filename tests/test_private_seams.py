"""Tests reach the engines through public seams only (issue 18, item 2: "Tests
use public seams, not private attributes").

Read from the source, in the style of test_layers.py: no file under tests/,
benchmarks/ or examples/ reads a private attribute of ``Engine`` or
``Engine`` (or of the classes they derive from in fenix_core) on anything
but ``self``/``cls``, neither as ``x._name`` nor as ``getattr(x, "_name")``.
What a test needs instead: ``engine.database``, ``engine.held_sessions()``,
``engine.lease_clock`` and ``fenix_core.testing.seams``. A private name that
the engines and a test's own class both use (``_lock``) is caught too: name
the test's attribute differently.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path

from fenix_core import Engine

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("tests", "benchmarks", "examples")
ACCESSORS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names(cls: type) -> set[str]:
    """Every private attribute of ``cls`` and of its fenix_core bases: methods
    and class attributes named ``_x``, and ``self._x`` assigned in a method."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("fenix_core"):
            continue
        names.update(n for n in vars(klass) if _private(n))
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if (
                        isinstance(leaf, ast.Attribute)
                        and isinstance(leaf.value, ast.Name)
                        and leaf.value.id == "self"
                        and _private(leaf.attr)
                    ):
                        names.add(leaf.attr)
    return names


ENGINE_PRIVATE = frozenset(private_names(Engine) | private_names(Engine))


def reads(source: str, names: frozenset[str]) -> Iterator[tuple[int, str]]:
    """(line, expression) of each access to one of ``names`` on an object
    that is not ``self``/``cls``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            yield node.lineno, ast.unparse(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ACCESSORS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in names
        ):
            yield node.lineno, ast.unparse(node)


def checked_files() -> Iterator[Path]:
    for folder in CHECKED:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_the_engines_private_names_are_found() -> None:
    # guards the rule below against a collector that finds nothing: each
    # engine keeps its database, lock and reply intake under these names
    for engine in (Engine, Engine):
        assert {"_db", "_lock", "_replies"} <= private_names(engine), engine
    assert "database" not in ENGINE_PRIVATE


def test_the_check_sees_each_way_of_reading_a_private_attribute() -> None:
    source = textwrap.dedent(
        """
        with Session(engine._db) as orm:
            pass
        a._leases[sid] = None
        engine._replies._queue
        getattr(worker, "_loaded")
        setattr(worker, "_advance", None)
        super()._lock
        """
    )
    names = frozenset({"_db", "_leases", "_replies", "_loaded", "_advance", "_lock"})
    found = [line for line, _ in reads(source, names)]
    assert sorted(found) == [2, 4, 5, 6, 7, 8]


def test_the_check_leaves_public_seams_and_own_attributes_alone() -> None:
    source = textwrap.dedent(
        """
        class Helper:
            def __init__(self):
                self._db = None
                self._lock = None

            @classmethod
            def make(cls):
                return cls._lock

        engine.database
        engine.held_sessions()
        getattr(engine, "database")
        fake._hosts
        """
    )
    assert list(reads(source, ENGINE_PRIVATE)) == []


def test_no_test_reads_a_private_attribute_of_an_engine() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{line}": expression
        for path in checked_files()
        for line, expression in reads(path.read_text(), ENGINE_PRIVATE)
    }
    assert found == {}, "use engine.database, held_sessions() or fenix_core.testing.seams"
