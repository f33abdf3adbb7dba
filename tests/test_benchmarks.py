"""Smoke tests of the benchmark scripts: each main() on a tiny size prints its
figures, and they are sane. Keeps benchmarks/ from rotting; asserts no times."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> object:
    """Import a script of benchmarks/ by name (they import each other as top-level
    modules, the way `python benchmarks/x.py` runs them)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


def test_scale_runs_a_tiny_scenario_end_to_end_and_prints_its_figures(
    bench, capsys: pytest.CaptureFixture[str]
) -> None:
    scale = bench("scale")
    assert scale.main(["--sizes", "tiny", "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("tiny"))
    # size workflow wall CPU RSS "MB" db-bytes notifications steps steps/s makespan
    fields = row.split()
    assert fields[:2] == ["tiny", "rolling"], row
    wall, cpu, rss = float(fields[2]), float(fields[3]), float(fields[4])
    db_bytes, notifications, steps = (int(f.replace(",", "")) for f in fields[6:9])
    steps_per_s, makespan = float(fields[9]), float(fields[10].replace(",", ""))
    assert min(wall, cpu, rss) > 0
    assert db_bytes > 0  # the run was on a SQLite file
    tiny = scale.SIZES["tiny"]
    # Every host goes in and out of maintenance; every project is asked at least
    # MAINTENANCE and MAINTENANCE_COMPLETE.
    assert notifications >= 2 * tiny.hosts + 2 * tiny.projects
    assert min(steps, steps_per_s) > 0
    # Hosts are maintained one at a time, each taking host_work of simulated time.
    assert makespan >= tiny.hosts * tiny.host_work
    for expected in (f"{tiny.hosts} hosts", "large/small CPU", "huge/large CPU"):
        assert expected in out


def test_scale_reports_a_scenario_stopped_by_the_timeout_instead_of_waiting(
    bench, capsys: pytest.CaptureFixture[str]
) -> None:
    scale = bench("scale")
    # 200,000 instances cannot be set up in half a second: the child is stopped.
    assert scale.main(["--sizes", "huge", "--timeout", "0.5", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    (result,) = document["results"]
    assert (result["size"], result["finished"]) == ("huge", False)
    assert result["phase"] in ("starting", "setup")


def test_scale_rejects_an_unknown_size(bench) -> None:
    scale = bench("scale")
    with pytest.raises(SystemExit):
        scale.main(["--sizes", "enormous"])


def test_replies_measures_both_backends(bench, capsys: pytest.CaptureFixture[str]) -> None:
    replies = bench("replies")
    assert replies.main(["--projects", "5", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in document["results"]] == ["sqlite file", "in memory"]
    for r in document["results"]:
        assert r["replies"] == 5
        assert min(r["accepted_per_s"], r["processed_per_s"], r["overall_per_s"]) > 0
    assert document["target"]["verdict"] in ("PASS", "FAIL")


def test_makespan_compares_constrained_with_serial(
    bench, capsys: pytest.CaptureFixture[str]
) -> None:
    makespan = bench("makespan")
    assert makespan.main(["--hosts", "3", "--instances", "9", "--groups", "2"]) == 0
    out = capsys.readouterr().out
    figures = {
        name: float(value)
        for name, value in re.findall(
            r"^(serial \(rolling\) makespan|constrained makespan"
            r"|lower bound)\s+([\d.]+) s",
            out,
            re.MULTILINE,
        )
    }
    assert set(figures) == {"serial (rolling) makespan", "constrained makespan", "lower bound"}
    assert all(v > 0 for v in figures.values())
    assert figures["lower bound"] <= figures["constrained makespan"]
    assert re.search(r"constrained / serial\s+[\d.]+\s+target <= 0.35\s+(PASS|FAIL)", out)
