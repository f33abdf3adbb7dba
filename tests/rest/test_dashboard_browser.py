"""The dashboard in a real headless browser: Debian's chromium, driven by
selenium through Debian's chromedriver, against fenix-api serving sessions
on the simulated cloud (real clock, short actions).

Skipped, saying why, when chromium or its driver is not installed (``nox -s
tests`` installs them when run as root, as it does PostgreSQL).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from fenix_core.rest import FenixService
from fenix_core.testing import SimulatedCloud


def _load_demo() -> ModuleType:
    path = Path(__file__).parents[2] / "docs" / "dashboard_screenshot.py"
    spec = importlib.util.spec_from_file_location("dashboard_screenshot", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = _load_demo()
pytestmark = [
    pytest.mark.skipif(
        demo.browser_unavailable() is not None, reason=str(demo.browser_unavailable())
    ),
    # A real browser on real time (the 100-host screenshot takes half a
    # minute): the whole module runs first, so that its browser, started once
    # for the module, is not started again for tests left behind.
    pytest.mark.slow,
]

ALPHA, BETA = "tenant-alpha-3c7", "tenant-beta-6f1"
TENANTS = {"tok-alpha": ALPHA, "tok-beta": BETA}
#: Records every host state the page draws, across its redraws.
RECORD_STATES = """
window.__seen = {};
const record = () => {
  for (const row of document.querySelectorAll('g.row')) {
    const seen = window.__seen[row.dataset.host] || (window.__seen[row.dataset.host] = []);
    if (seen[seen.length - 1] !== row.dataset.state) seen.push(row.dataset.state);
  }
};
new MutationObserver(record).observe(document.getElementById('content'),
                                     {childList: true, subtree: true});
record();
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = demo.open_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def services() -> Iterator[list[FenixService]]:
    started: list[FenixService] = []
    yield started
    for service in started:
        service.stop()
        service.engine.close()


def by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def host_states(driver: Any) -> dict[str, str]:
    """The state of each host row, read in one go (the page redraws them)."""
    states: dict[str, str] = driver.execute_script(
        "const out = {};"
        "for (const r of document.querySelectorAll('g.row')) out[r.dataset.host] = r.dataset.state;"
        "return out;"
    )
    return states


def badge(driver: Any) -> str:
    """The session's state as the page shows it."""
    text: str | None = driver.execute_script(
        "const b = document.querySelector('#s-head [data-role=\"state\"]');"
        "return b ? b.textContent : null;"
    )
    return text or ""


def attributes(driver: Any, selector: str, name: str) -> list[str]:
    """``name`` of every element ``selector`` matches, read in one go."""
    values: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(e => e.getAttribute(arguments[1]));",
        selector,
        name,
    )
    return values


def text_of(driver: Any, element_id: str) -> str:
    text: str = driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
        element_id,
    )
    return text


def control(driver: Any, action: str) -> Any:
    """A control button (these are drawn once and kept across redraws)."""
    return by_css(driver, f'#s-controls [data-action="{action}"]')[0]


def test_the_session_page_follows_the_hosts_live(
    browser: Any, services: list[FenixService]
) -> None:
    # Each host's maintenance lasts 3 s of real time: long enough for the
    # page (polling every 250 ms) to see it on a machine at a load of 20.
    service = demo.start_service(demo.demo_cloud(3), action_seconds=3)
    services.append(service)
    # Host work starts a few seconds on, so the page is watching when it does
    # (also on a loaded machine).
    start = datetime.now(UTC) + timedelta(seconds=4)
    sid = demo.create_session(service, maintenance_at=start.isoformat())
    demo.log_in(browser, f"{service.url}/dashboard?poll=250", demo.ADMIN_TOKEN)
    row = f'tr[data-session="{sid}"] a'
    demo.wait_for(lambda: by_css(browser, row), what="the row")
    # Clicked in the page's own turn: the list is redrawn at every poll.
    browser.execute_script("document.querySelector(arguments[0]).click()", row)
    demo.wait_for(lambda: by_css(browser, "g.row"), what="host rows")
    browser.execute_script(RECORD_STATES)

    demo.wait_for(lambda: badge(browser) == "MAINTENANCE_DONE", timeout=30, what="done")
    assert service.engine.get_session(sid).state == "MAINTENANCE_DONE"
    seen: dict[str, list[str]] = browser.execute_script("return window.__seen")
    assert sorted(seen) == ["cmp-0", "cmp-1", "cmp-2"]
    for host, states in seen.items():
        assert states[-1] == "MAINTAINED", (host, states)
    # The page showed hosts on their way, not only the end.
    intermediate = {s for states in seen.values() for s in states[:-1]}
    assert intermediate & {"PENDING", "DRAINING", "DRAINED", "IN_MAINTENANCE"}, seen
    assert any("IN_MAINTENANCE" in states for states in seen.values()), seen
    assert text_of(browser, "s-percent") == "100%"
    # No control applies to a finished session.
    assert all(not b.is_enabled() for b in by_css(browser, "#s-controls button"))


def test_pause_and_resume_from_the_page_reach_the_engine(
    browser: Any, services: list[FenixService]
) -> None:
    service = demo.start_service(demo.demo_cloud(6), action_seconds=0.5)
    services.append(service)
    engine = service.engine
    sid = demo.create_session(service)
    demo.log_in(browser, f"{service.url}/dashboard/sessions/{sid}?poll=250", demo.ADMIN_TOKEN)
    demo.wait_for(
        lambda: "MAINTAINED" in host_states(browser).values(), timeout=30, what="a host done"
    )

    control(browser, "pause").click()
    demo.wait_for(lambda: engine.get_session(sid).paused, what="the engine paused")
    demo.wait_for(
        lambda: browser.execute_script("return !!document.querySelector('[data-role=paused]')"),
        what="the PAUSED badge",
    )
    resume = control(browser, "resume")
    demo.wait_for(resume.is_enabled, what="resume enabled")
    # Paused: work under way ends, no host leaves PENDING.
    pending = {h.name for h in engine.get_session(sid).hosts if h.state == "PENDING"}
    assert pending, "the session ended before it could be paused"
    time.sleep(2.0)
    view = engine.get_session(sid)
    assert view.paused
    assert {h.name for h in view.hosts if h.state == "PENDING"} == pending

    resume.click()
    demo.wait_for(lambda: not engine.get_session(sid).paused, what="the engine resumed")
    demo.wait_for(lambda: badge(browser) == "MAINTENANCE_DONE", timeout=40, what="done")
    assert set(host_states(browser).values()) == {"MAINTAINED"}
    assert not browser.execute_script("return !!document.querySelector('[data-role=paused]')")


def test_a_project_token_sees_only_its_project(browser: Any, services: list[FenixService]) -> None:
    cloud = SimulatedCloud(migration_seconds=0.05, live_migration_seconds=0.05)
    for host in ("cmp-0", "cmp-1", "cmp-2"):
        cloud.add_host(host, vcpus=8)
    cloud.add_instance("vm-alpha-a", project_id=ALPHA, host="cmp-0", vcpus=2)
    cloud.add_instance("vm-beta-b", project_id=BETA, host="cmp-1", vcpus=2)
    service = demo.start_service(cloud, action_seconds=60, project_tokens=TENANTS)
    services.append(service)
    # Host work starts in an hour: no instance moves into the other session's
    # hosts meanwhile, so each session keeps exactly one project.
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    alpha_sid = demo.create_session(service, hosts=["cmp-0"], maintenance_at=later)
    beta_sid = demo.create_session(service, hosts=["cmp-1"], maintenance_at=later)
    assert list(service.engine.get_session(alpha_sid).projects) == [ALPHA]
    assert list(service.engine.get_session(beta_sid).projects) == [BETA]

    # The admin looks first, then logs out and hands the tab to a project.
    demo.log_in(browser, f"{service.url}/dashboard/sessions/{alpha_sid}?poll=250", demo.ADMIN_TOKEN)
    demo.wait_for(lambda: by_css(browser, "#s-controls"), what="the admin's controls")
    browser.find_element("id", "logout").click()
    demo.wait_for(lambda: browser.find_element("id", "login").is_displayed(), what="log-in")
    browser.find_element("id", "token").send_keys("tok-alpha")
    browser.find_element("css selector", "#login button").click()
    demo.wait_for(lambda: by_css(browser, "g.row"), what="host rows")
    demo.wait_for(lambda: text_of(browser, "who") == f"project {ALPHA}", what="the project")
    # Nothing of the admin's page stays (a poll still under way when the
    # token changed is dropped; waited for, not slept on: machines are noisy).
    demo.wait_for(lambda: not by_css(browser, "#s-controls"), what="no admin controls")
    source = browser.page_source
    for secret in (BETA, "vm-beta-b", beta_sid):
        assert secret not in source

    browser.get(f"{service.url}/dashboard?poll=250")
    demo.wait_for(lambda: by_css(browser, "tr[data-session]"), what="the list")
    assert attributes(browser, "tr[data-session]", "data-session") == [alpha_sid]
    assert BETA not in browser.page_source
    assert beta_sid not in browser.page_source

    # Another project's session: the page says so and shows nothing.
    browser.get(f"{service.url}/dashboard/sessions/{beta_sid}?poll=250")
    message = demo.wait_for(lambda: text_of(browser, "message"), what="the refusal")
    assert "not found" in message
    assert not browser.find_element("id", "content").is_displayed()
    assert "vm-beta-b" not in browser.page_source

    # The endpoints themselves, called from the page with the token it holds.
    answers = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const token = sessionStorage.getItem('fenix-dashboard-token');
        const call = (method, path) => fetch(path, {method, headers: {'X-Auth-Token': token}})
          .then(r => r.status);
        Promise.all([
          call('GET', '/dashboard/api/sessions/' + arguments[0]),
          call('GET', '/v1/maintenance/' + arguments[0]),
          call('POST', '/v1/maintenance/' + arguments[1] + '/pause'),
          call('GET', '/dashboard/api/sessions/' + arguments[1]),
        ]).then(done);
        """,
        beta_sid,
        alpha_sid,
    )
    assert answers == [404, 403, 403, 200]
    assert not service.engine.get_session(alpha_sid).paused


@pytest.mark.no_cover
def test_screenshot_of_a_session_at_100_hosts(
    browser: Any,
    services: list[FenixService],
    tmp_path: Path,
    record_property: Any,
) -> None:
    service = demo.start_service(demo.demo_cloud(100), action_seconds=0.6)
    services.append(service)
    sid = demo.hundred_host_session(service)
    shot = demo.screenshot_session(
        browser, service, sid, tmp_path / "dashboard-100-hosts.png", done=30
    )
    # Printed at the end of the run (tests/rest/conftest.py) and in the JUnit report.
    record_property("dashboard_screenshot", str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(by_css(browser, "g.row")) == 100
    assert len(by_css(browser, "#s-groups tr[data-group]")) == 6  # 3 groups + 3 implicit
    view = httpx.get(
        f"{service.url}/dashboard/api/sessions/{sid}",
        headers={"X-Auth-Token": demo.ADMIN_TOKEN},
        timeout=30,
    ).json()
    assert view["session"]["hosts"] == 100
