"""examples/k8s_node_upgrade.py --fake upgrades a simulated cluster node by node."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "k8s_node_upgrade.py"


def test_node_upgrade_example_runs_on_the_fake_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(EXAMPLE))
    assert module["main"](["--fake"]) == 0
    out = capsys.readouterr().out
    for line in (
        "-> namespace db: PLANNED_MAINTENANCE [db/pg-0]",
        "node worker-0: IN_MAINTENANCE",
        "node worker-0: MAINTENANCE_COMPLETE",
        "MAINTENANCE_DONE: 5 node(s) upgraded",
        "0 budget violation(s)",
    ):
        assert line in out
    # Nodes one after another: worker-0 is back before worker-1 is taken.
    assert out.index("worker-0: MAINTENANCE_COMPLETE") < out.index("worker-1: IN_MAINTENANCE")


def test_node_upgrade_example_reports_a_bad_kubeconfig(tmp_path: Path) -> None:
    module = runpy.run_path(str(EXAMPLE))
    from fenix_core.errors import PluginError

    with pytest.raises(PluginError, match="no kubeconfig"):
        module["main"](["--kubeconfig", str(tmp_path / "none.yaml")])
