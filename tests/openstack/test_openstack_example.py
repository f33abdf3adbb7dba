"""The OpenStack example runs on the fake cloud and says what it did."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "openstack_rolling_upgrade.py"


@pytest.mark.no_cover
def test_example_upgrades_every_host_of_the_fake_cloud(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(EXAMPLE))
    assert module["main"](["--fake"]) == 0
    out = capsys.readouterr().out
    assert "hosts: cmp-0, cmp-1, cmp-2, cmp-3" in out
    for host in ("cmp-0", "cmp-1", "cmp-2", "cmp-3"):
        assert f"{host} MAINTENANCE_COMPLETE" in out
        assert f"disable_host {host}" in out
        assert f"enable_host {host}" in out
    assert "MAINTENANCE_DONE: 4 hosts, reason: none" in out
    assert "fake cloud: 6 migrations, 8 service toggles" in out
