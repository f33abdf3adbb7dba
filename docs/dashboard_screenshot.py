"""Draw docs/_static/dashboard.png: fenix-api's dashboard during a session on
100 simulated hosts, in Debian's headless chromium.

    python docs/dashboard_screenshot.py [OUTPUT.png]

Needs the rest extra, selenium (the dev extra) and Debian's ``chromium`` and
``chromium-driver`` packages; nothing is downloaded. The browser tests
(tests/rest/test_dashboard_browser.py) use the helpers below too.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fenix_core import Engine
from fenix_core.rest import FenixService, TokenAuthenticator
from fenix_core.testing import SimulatedCloud, TimedAction

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_TOKEN = "admin-token"
PROJECT_TOKENS = {"tok-web": "web", "tok-db": "db", "tok-cache": "cache"}
OUTPUT = Path(__file__).parent / "_static" / "dashboard.png"


def browser_unavailable() -> str | None:
    """Why the browser cannot be driven here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install 'fenix-core[dev]'"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.exists(path) or shutil.which(Path(path).name)):
            return f"{path} not found: install Debian's {package} (nox -s tests does as root)"
    return None


def open_browser(width: int = 1400, height: int = 1000) -> Any:
    """Headless chromium driven through Debian's chromedriver. Both paths are
    given, so selenium never looks for (or downloads) a browser of its own."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    service = Service(shutil.which("chromedriver") or CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=options)


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what or check}")
        time.sleep(0.05)


def log_in(driver: Any, url: str, token: str) -> None:
    """Open ``url`` (a dashboard page) and log in with ``token`` through the form."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    form = wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), what="log-in")
    assert form
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_for(lambda: driver.find_element(By.ID, "content").is_displayed(), what="content")


def demo_cloud(hosts: int, *, move_seconds: float = 0.05) -> SimulatedCloud:
    """``hosts`` computes, each with one instance of each of three projects
    (web, db, cache) and room for more: a host's instances move to the others."""
    cloud = SimulatedCloud(migration_seconds=move_seconds, live_migration_seconds=move_seconds)
    width = len(str(hosts))
    for index in range(hosts):
        host = f"cmp-{index:0{width}d}"
        cloud.add_host(host, vcpus=16)
        for project in PROJECT_TOKENS.values():
            cloud.add_instance(f"{project}-{index}", project_id=project, host=host, vcpus=2)
    return cloud


def start_service(
    cloud: SimulatedCloud, action_seconds: float, project_tokens: dict[str, str] | None = None
) -> FenixService:
    """fenix-api over an engine on ``cloud`` with an ``upgrade`` action of
    ``action_seconds`` per host, on a free port (``service.url``); the admin
    token is ADMIN_TOKEN, ``project_tokens`` (PROJECT_TOKENS) map tokens to projects."""
    engine = Engine(
        plugins=[cloud, TimedAction("upgrade", action_seconds)], load_entry_points=False
    )
    tokens = TokenAuthenticator([ADMIN_TOKEN], project_tokens or PROJECT_TOKENS)
    return FenixService(engine, tokens, port=0).start()


def create_session(service: FenixService, **fields: Any) -> str:
    import httpx

    body = {"hosts": [], "actions": [{"plugin": "upgrade", "type": "host"}], **fields}
    answer = httpx.post(
        f"{service.url}/v1/maintenance",
        json=body,
        headers={"X-Auth-Token": ADMIN_TOKEN},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["session_id"])


def hundred_host_session(service: FenixService) -> str:
    """The screenshot's session: the constrained workflow, ten hosts at once,
    groups that allow a few members out at a time."""
    import httpx

    for project in PROJECT_TOKENS.values():
        token = next(t for t, p in PROJECT_TOKENS.items() if p == project)
        limit = {"web": 12, "db": 4, "cache": 10}[project]
        headers = {"X-Auth-Token": token}
        httpx.put(
            f"{service.url}/v1/instance_group/{project}-app",
            json={"group_name": project, "max_impacted_members": limit, "recovery_time": 0},
            headers=headers,
            timeout=30,
        ).raise_for_status()
        for index in range(0, 100, 3):  # every third instance is in the group
            httpx.put(
                f"{service.url}/v1/instance/{project}-{index}",
                json={"group_id": f"{project}-app", "migration_type": "LIVE_MIGRATE"},
                headers=headers,
                timeout=30,
            ).raise_for_status()
    return create_session(service, workflow="constrained", max_parallel_hosts=10)


def screenshot_session(
    driver: Any, service: FenixService, session_id: str, path: Path, *, done: int
) -> Path:
    """Log in as the admin, open the session page, wait until ``done`` hosts
    are maintained and save the page as PNG at ``path``."""
    from selenium.webdriver.common.by import By

    log_in(driver, f"{service.url}/dashboard/sessions/{session_id}?poll=500", ADMIN_TOKEN)

    def maintained() -> bool:
        rows = driver.find_elements(By.CSS_SELECTOR, 'g.row[data-state="MAINTAINED"]')
        return len(rows) >= done

    wait_for(maintained, timeout=180, what=f"{done} hosts maintained on the page")
    time.sleep(0.6)  # one more poll, so bars and counts agree
    # The whole page, beyond the window (Chrome DevTools' own capture).
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUTPUT
    reason = browser_unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    service = start_service(demo_cloud(100), action_seconds=1.5)
    driver = open_browser()
    try:
        session_id = hundred_host_session(service)
        print(screenshot_session(driver, service, session_id, out, done=35))
    finally:
        driver.quit()
        service.stop()
        service.engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
