"""The `fenix` command line on the sample scenarios and on a real database."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fenix_core.cli import main
from fenix_core.sim.scenario import load_scenario_file
from fenix_core.sim.simulation import Simulation

SCENARIOS = Path(__file__).resolve().parent.parent / "examples" / "scenarios"
ROLLING = SCENARIOS / "rolling.yaml"
FAULTS = SCENARIOS / "faults.yaml"
CONSTRAINED = SCENARIOS / "constrained.yaml"


def fenix(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def fenix_json(*args: str, code: int = 0) -> Any:
    return json.loads(fenix(*args, "--json", code=code).output)


def host_names(path: Path) -> list[str]:
    return [h.name for h in load_scenario_file(path).hosts]


def assert_waves_cover_each_host_once(waves: list[dict[str, Any]], hosts: list[str]) -> None:
    in_waves = [h for wave in waves for h in wave["hosts"]]
    assert sorted(in_waves) == sorted(hosts)
    starts = [wave["start"] for wave in waves]
    assert starts == sorted(starts)
    for earlier, later in itertools.pairwise(waves):
        assert later["start"] >= earlier["end"]


@pytest.mark.parametrize("path", [ROLLING, CONSTRAINED], ids=lambda p: p.stem)
def test_simulate_maintains_every_host(path: Path) -> None:
    report = fenix_json("simulate", path)
    hosts = host_names(path)
    assert report["state"] == "MAINTENANCE_DONE"
    assert report["makespan_seconds"] > 0
    assert {h["name"]: h["state"] for h in report["hosts"]} == dict.fromkeys(hosts, "MAINTAINED")
    for host in report["hosts"]:
        assert 0 <= host["maintenance_start"] < host["end"] <= report["makespan_seconds"]
        if host["drain_start"] is not None:
            assert host["drain_start"] <= host["maintenance_start"]
    assert_waves_cover_each_host_once(report["waves"], hosts)
    managed = {m.project for m in load_scenario_file(path).managers}
    assert set(report["notifications"]) == managed
    for project in managed:
        by_state = report["notifications"][project]["by_state"]
        assert by_state["MAINTENANCE"] == 1
        assert by_state["MAINTENANCE_COMPLETE"] == 1
    assert report["migrations"]["done"] > 0


def test_simulate_reports_group_peaks_within_limits() -> None:
    report = fenix_json("simulate", CONSTRAINED)
    groups = {g["group_id"]: g for g in report["groups"]}
    assert groups["web-tier"]["members"] == 4
    assert groups["db-pair"]["max_impacted_members"] == 1
    for group in groups.values():
        assert 1 <= group["peak_impacted"] <= group["max_impacted_members"]
    # Constraints allowing it, several hosts are maintained at once.
    assert max(len(w["hosts"]) for w in report["waves"]) > 1


def test_simulate_with_faults_reports_the_failure() -> None:
    report = fenix_json("simulate", FAULTS, code=1)
    down = load_scenario_file(FAULTS).faults.hosts_stay_down[0]
    assert report["state"] == "MAINTENANCE_FAILED"
    assert down in report["reason"]
    states = {h["name"]: h["state"] for h in report["hosts"]}
    assert states.pop(down) == "FAILED"
    assert set(states.values()) == {"MAINTAINED"}
    assert report["migrations"]["failed"] == 2


@pytest.mark.parametrize("path", [ROLLING, FAULTS, CONSTRAINED], ids=lambda p: p.stem)
def test_plan_previews_waves_of_every_host(path: Path) -> None:
    preview = fenix_json("plan", path)
    assert preview["state"] == "MAINTENANCE_DONE"  # the plan runs without the faults
    assert preview["estimated_makespan_seconds"] > 0
    assert "every manager answering at once" in preview["method"]
    assert_waves_cover_each_host_once(preview["waves"], host_names(path))


def test_plan_is_not_slower_than_a_run_with_reply_delays() -> None:
    preview = fenix_json("plan", ROLLING)
    report = fenix_json("simulate", ROLLING)
    assert preview["estimated_makespan_seconds"] < report["makespan_seconds"]


def test_human_output_names_hosts_and_makespan() -> None:
    out = fenix("simulate", ROLLING).output
    assert "MAINTENANCE_DONE" in out
    assert "makespan" in out
    for host in host_names(ROLLING):
        assert host in out
    out = fenix("plan", ROLLING).output
    assert "estimated makespan" in out
    assert "wave" in out


def test_bad_scenario_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  - {name: a}\n  - {name: b, vcpus: many}\n")
    result = fenix("simulate", bad, code=2)
    assert "hosts[1].vcpus: Input should be a valid integer" in result.output
    error = fenix_json("plan", bad, code=2)
    assert error["field"] == "hosts[1].vcpus"
    assert fenix_json("validate", ROLLING)["hosts"] == len(host_names(ROLLING))


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A database file with one finished session, written by a real engine."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'fenix.db'}"
    with Simulation(load_scenario_file(ROLLING), database_url=url) as sim:
        result = sim.run()
    assert result.view.state == "MAINTENANCE_DONE"
    return url, result.view.session_id


def test_sessions_list_and_show_read_the_database(database: tuple[str, str]) -> None:
    url, session_id = database
    listed = fenix_json("sessions", "list", "--database-url", url)
    assert [(s["session_id"], s["state"]) for s in listed] == [(session_id, "MAINTENANCE_DONE")]
    shown = fenix_json("sessions", "show", session_id, "--database-url", url)
    hosts = host_names(ROLLING)
    assert [h["name"] for h in shown["hosts"]] == hosts
    assert all(h["started_at"] < h["finished_at"] for h in shown["hosts"])
    report = shown["report"]
    assert report["makespan_seconds"] > 0
    assert_waves_cover_each_host_once(report["waves"], hosts)
    drained = [h for h in report["hosts"] if h["drain_start"] is not None]
    assert drained, "moves off hosts show as draining"
    assert session_id in fenix("sessions", "show", session_id, "--database-url", url).output


def test_sessions_show_unknown_session(database: tuple[str, str]) -> None:
    url, _ = database
    result = fenix("sessions", "show", "no-such-session", "--database-url", url, code=2)
    assert "session 'no-such-session' not found" in result.output


def test_sessions_refuse_a_missing_database_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    error = fenix_json("sessions", "list", "--database-url", f"sqlite:///{missing}", code=2)
    assert error["field"] == "database_url"
    assert not missing.exists()


def test_timeline_svg_has_a_bar_per_host(tmp_path: Path) -> None:
    out = tmp_path / "timeline.svg"
    fenix("simulate", CONSTRAINED, "--json", "--timeline", out)
    svg = out.read_text()
    assert out.stat().st_size > 10_000
    for host in host_names(CONSTRAINED):
        assert f'id="host-{host}"' in svg
    assert 'id="group-web-tier"' in svg


def test_timeline_png_of_a_recorded_session(database: tuple[str, str], tmp_path: Path) -> None:
    url, session_id = database
    out = tmp_path / "session.png"
    fenix("sessions", "show", session_id, "--database-url", url, "--timeline", out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_timeline_needs_a_known_format(tmp_path: Path) -> None:
    result = fenix("plan", ROLLING, "--timeline", tmp_path / "chart.gif", code=2)
    assert "timeline: the file must end in .svg or .png" in result.output


def test_live_display_follows_the_session() -> None:
    from io import StringIO

    from rich.console import Console

    from fenix_core.cli.display import LiveProgress, describe

    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with (
        Simulation(load_scenario_file(ROLLING)) as sim,
        LiveProgress(sim.engine, console) as live,
    ):
        result = sim.run(on_start=live.attach)
        live.refresh()
        final = live.render(result.view)
    assert result.view.state == "MAINTENANCE_DONE"
    assert "MAINTAINED" in screen.getvalue()
    assert any("PLANNED_MAINTENANCE" in line for line in live.events)
    assert final.renderables
    line = describe({"state": "IN_MAINTENANCE", "host": "cmp-0"})
    assert line is not None
    assert "cmp-0" in line
