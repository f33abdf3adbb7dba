"""Names the docs use exist in the code.

Checked mechanically, in docs/*.md and README.md:

* ``engine.name`` and ``Engine.name``: an attribute of an ``Engine``;
* dotted names ``fenix_core....``: importable, attribute by attribute;
* ``fenix ...`` command lines (in code spans and code blocks): every
  subcommand exists in the click app and every ``--flag`` is an option of the
  command or of a group above it; ``fenix-api --flag`` likewise in its parser;
  a ``--flag`` alone in a code span of cli.md is an option of some ``fenix``
  command;
* ``UPPER_CASE`` names in code spans (states, notifications, replies,
  constants): a value of a fenix_core.states enum or a name or string the
  code itself contains, or an ``ACK_`` / ``NACK_`` reply to one; a short list
  of outside names (HTTP methods, OpenStack's own) is allowed; so are
  ``FENIX_API_<OPTION>`` variables of fenix-api's options.

Each check is also run on a planted stale name, to show it catches one.
"""

from __future__ import annotations

import enum
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import fenix_core.states
from fenix_core import Engine
from fenix_core.cli import main as fenix
from fenix_core.rest.cli import ENV_PREFIX
from fenix_core.rest.cli import parser as fenix_api_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
SOURCES = [ROOT / "fenix_core", ROOT / "fenix_core_openstack", ROOT / "fenix_core_k8s"]

# Upper-case names the docs take from elsewhere: HTTP, SQL, OpenStack, YAML.
OUTSIDE_NAMES = frozenset(
    {"GET", "PUT", "POST", "DELETE", "INSERT", "UPDATE", "YES", "ERROR", "VERIFY_RESIZE"}
    | {"OS_CLOUD", "OS_CLIENT_CONFIG_FILE"}
)

SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def pages() -> Iterator[tuple[str, str]]:
    for path in PAGES:
        yield path.name, path.read_text(encoding="utf-8")


def code_lines(text: str) -> Iterator[str]:
    """Code spans and the lines of code blocks."""
    for block in FENCE.finditer(text):
        yield from block.group(1).splitlines()
    outside = FENCE.sub("", text)
    for span in SPAN.finditer(outside):
        yield span.group(1)


# --------------------------------------------------------------------------- Engine


def engine_names(text: str) -> set[str]:
    # (not a path: fenix_core/engine.py is a file, not an attribute)
    return set(re.findall(r"(?<!/)\b[Ee]ngine\.([a-z_][a-z0-9_]*)", text))


def missing_engine_names(text: str, engine: Engine) -> set[str]:
    return {name for name in engine_names(text) if not hasattr(engine, name)}


# --------------------------------------------------------------------------- dotted names


def dotted_names(text: str) -> set[str]:
    return set(re.findall(r"\b(fenix_core(?:_openstack|_k8s)?(?:\.[A-Za-z_]\w*)+)", text))


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


# --------------------------------------------------------------------------- commands

FENIX_LINE = re.compile(r"(?:^|\$ |\| )fenix( [^|#>\n]*)?$|^fenix( .*)?$")


def fenix_commands(text: str) -> Iterator[list[str]]:
    for line in code_lines(text):
        for match in re.finditer(r"(?:^|(?<=\$ ))fenix((?: [^ |#>]+)*)", line.strip()):
            yield match.group(1).split()


def fenix_errors(words: list[str]) -> list[str]:
    """What in ``fenix WORDS`` the click app does not have."""
    errors = []
    chain: list[click.Command] = [fenix]
    for word in words:
        command = chain[-1]
        if word.startswith("--"):
            flag = word.split("=")[0]
            if not any(flag in p.opts for c in chain for p in c.params) and flag not in (
                "--help",
                "--version",
            ):
                errors.append(f"{' '.join(str(c.name) for c in chain[1:])}: no option {flag}")
        elif isinstance(command, click.Group):
            sub = command.commands.get(word)
            if sub is None:
                if re.fullmatch(r"[a-z]+", word):
                    errors.append(f"no command {word!r} in {command.name}")
                break
            chain.append(sub)
    return errors


def fenix_flags() -> set[str]:
    flags: set[str] = set()

    def walk(command: click.Command) -> None:
        flags.update(opt for p in command.params for opt in p.opts)
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                walk(sub)

    walk(fenix)
    return flags


def api_flag_errors(text: str) -> list[str]:
    known = {opt for action in fenix_api_parser()._actions for opt in action.option_strings}
    errors = []
    for line in code_lines(text):
        for match in re.finditer(r"fenix-api((?: [^|#>]+)*)", line):
            for word in match.group(1).split():
                flag = word.split("=")[0]
                if flag.startswith("--") and flag not in known:
                    errors.append(f"fenix-api: no option {flag}")
    return errors


def lone_cli_flag_errors(text: str) -> list[str]:
    flags = fenix_flags() | {"--help", "--version"}
    return [
        f"no fenix command has {span.group(1)}"
        for span in SPAN.finditer(FENCE.sub("", text))
        if re.fullmatch(r"--[a-z-]+", span.group(1)) and span.group(1) not in flags
    ]


# --------------------------------------------------------------------------- states


def state_values() -> set[str]:
    values: set[str] = set()
    for obj in vars(fenix_core.states).values():
        if isinstance(obj, type) and issubclass(obj, enum.Enum):
            values |= {str(m.value) for m in obj} | {m.name for m in obj}
    return values


def code_words() -> set[str]:
    words: set[str] = set()
    for root in SOURCES:
        for path in root.rglob("*.py"):
            words |= set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
    return words


def api_environment() -> set[str]:
    """fenix-api's environment variables: FENIX_API_ and each option's name."""
    return {
        ENV_PREFIX + action.dest.upper()
        for action in fenix_api_parser({})._actions
        if action.option_strings and action.dest != "help"
    }


def upper_names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"`([A-Z][A-Z0-9_]{2,})`", text)}


def unknown_upper_names(text: str, known: set[str]) -> set[str]:
    return upper_names(text) - known - OUTSIDE_NAMES


# --------------------------------------------------------------------------- tests

PLANTED = """
`engine.pause_all(sid)` and `Engine.abort` and `engine.pause(sid)`;
`fenix_core.engine.Engine.frobnicate` next to `fenix_core.engine.Engine.pause`;
```sh
$ fenix sessions kill 3f2a --database-url sqlite:///f.db
$ fenix simulate s.yaml --fast
$ fenix sessions pause 3f2a --database-url sqlite:///f.db --reason freeze
fenix-api --database-url sqlite:///f.db --daemon
```
`--turbo` and `--no-live`; `MAINTENANCE_PAUSED` and `MAINTENANCE_DONE`;
`FENIX_API_DAEMON` and `FENIX_API_LOG_FORMAT`.
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine(load_entry_points=False) as engine:
        yield engine


@pytest.fixture(scope="module")
def known_upper() -> set[str]:
    names = state_values() | code_words() | api_environment()
    # Replies: ACK_x / NACK_x of a notification state (IN_SCALE is an alias);
    # DEFAULT_x: a project's state when the reply policy acted for it.
    prefixes = ("ACK", "NACK", "DEFAULT")
    return names | {f"{prefix}_{name}" for name in names for prefix in prefixes}


def test_the_checks_catch_planted_stale_names(engine: Engine, known_upper: set[str]) -> None:
    assert missing_engine_names(PLANTED, engine) == {"pause_all", "abort", "frobnicate"}
    assert {d for d in dotted_names(PLANTED) if not resolves(d)} == {
        "fenix_core.engine.Engine.frobnicate"
    }
    errors = [e for words in fenix_commands(PLANTED) for e in fenix_errors(words)]
    assert errors == ["no command 'kill' in sessions", "simulate: no option --fast"]
    assert api_flag_errors(PLANTED) == ["fenix-api: no option --daemon"]
    assert lone_cli_flag_errors(PLANTED) == ["no fenix command has --turbo"]
    assert unknown_upper_names(PLANTED, known_upper) == {"MAINTENANCE_PAUSED", "FENIX_API_DAEMON"}


@pytest.mark.parametrize(("page", "text"), list(pages()), ids=lambda v: str(v)[:20])
def test_docs_name_what_exists(page: str, text: str, engine: Engine, known_upper: set[str]) -> None:
    problems = [f"engine.{n}: no such Engine attribute" for n in missing_engine_names(text, engine)]
    problems += [f"{d}: does not resolve" for d in dotted_names(text) if not resolves(d)]
    problems += [e for words in fenix_commands(text) for e in fenix_errors(words)]
    problems += api_flag_errors(text)
    if page == "cli.md":
        problems += lone_cli_flag_errors(text)
    problems += [f"`{n}`: no such state or name" for n in unknown_upper_names(text, known_upper)]
    assert not problems, f"{page}: " + "; ".join(sorted(problems))


def test_the_checks_see_the_names_the_docs_use(engine: Engine) -> None:
    """Not vacuous: the extraction finds what the pages do name."""
    text = "\n".join(t for _, t in pages())
    assert len(engine_names(text)) > 20
    assert len(dotted_names(text)) > 20
    commands = [" ".join(w) for w in fenix_commands(text)]
    assert any(c.startswith("sessions pause") for c in commands)
    assert any("--timeline" in c for c in commands)
    assert {"MAINTENANCE_DONE", "IN_MAINTENANCE", "LIVE_MIGRATE"} <= upper_names(text)
