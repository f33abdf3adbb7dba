"""CI runs exactly the README's test command (.ci/run), so a change to one
that forgets the other is caught before CI ever runs it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The commands of the README's first sh block, without their comments."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None, "README.md has no sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readmes_test_command() -> None:
    install_and_demo, tests = readme_commands()[:2]
    assert install_and_demo.endswith("python3 -m nox -s demo")
    assert tests.endswith("python3 -m nox")
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in script if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == [tests]
