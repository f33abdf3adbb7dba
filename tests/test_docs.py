"""The documentation stays true to the code.

* docs/states.md is exactly what docs/gen_states.py prints.
* Every ```python block in docs/*.md runs without raising, unless its first
  line is ``# not run``. Each block runs alone (a fresh namespace, the current
  directory a fresh tmp_path). A block that defines ``test_*`` functions is a
  test module: it is also run with pytest, and all its tests must pass.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SKIP_MARK = "# not run"


def python_blocks() -> Iterator[Any]:
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            code = match.group(1)
            if code.splitlines()[:1] == [SKIP_MARK]:
                continue
            line = text.count("\n", 0, match.start()) + 2  # first line of code
            yield pytest.param(code, id=f"{path.name}:{line}")


BLOCKS = list(python_blocks())


def test_states_page_is_generated() -> None:
    result = subprocess.run(
        [sys.executable, str(DOCS / "gen_states.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert (DOCS / "states.md").read_text(encoding="utf-8") == result.stdout, (
        "docs/states.md is out of date; regenerate it with: "
        "python docs/gen_states.py > docs/states.md"
    )


def test_there_are_samples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("code", BLOCKS)
def test_python_sample_runs(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.chdir(tmp_path)
    name = f"docs/{request.node.callspec.id}"
    namespace: dict[str, Any] = {"__name__": "docs_sample"}
    exec(compile(code, name, "exec"), namespace)
    tests = [k for k, v in namespace.items() if k.startswith("test_") and callable(v)]
    if tests:
        pytester: pytest.Pytester = request.getfixturevalue("pytester")
        pytester.makepyfile(test_sample=code)
        result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=len(tests))
