"""The README's main example runs to MAINTENANCE_DONE and says what it did."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "rolling_upgrade.py"


def test_main_example_completes_the_rolling_upgrade(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width
    module = runpy.run_path(str(EXAMPLE))
    assert module["main"](["--plain", "--speed", "0"]) == 0
    out = capsys.readouterr().out
    # The dialogue a reader is meant to see: the scale-in, then host by host.
    for line in (
        "session MAINTENANCE 0%",
        "-> vnf-scaler: SCALE_IN",
        "session PREPARE_MAINTENANCE",
        "ctl-0 IN_MAINTENANCE",
        "-> db-ha: PLANNED_MAINTENANCE [db-active]",
        "session MAINTENANCE_DONE 100%",
        "per-host summary",
    ):
        assert line in out
    assert "MAINTENANCE_DONE: 10 hosts upgraded" in out
    assert "no host was taken out of service with an instance on it" in out
