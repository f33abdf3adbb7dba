"""fenix-api's GET /metrics: scraped during a running session, guarded by an
admin token (or not, when asked), described honestly in the OpenAPI; and the
JSON log lines of ``--log-format json``."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_metrics import step_until

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.rest import WebhookOutbox, create_app
from fenix_core.rest.cli import _configure_logging, parser
from fenix_core.rest.json_logs import JsonFormatter
from fenix_core.testing import ScriptedManager, SimulatedCloud

from .conftest import ADMIN, PA, TOKENS, error_of
from .test_rest_api import create, subscribe


def scrape(client: TestClient, headers: dict[str, str] = ADMIN) -> dict[str, float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def host_states(sample: dict[str, float], session_id: str) -> dict[str, float]:
    prefix = "fenix_hosts"
    labelled = [
        (json.loads(key[len(prefix) :]), n)
        for key, n in sample.items()
        if key.startswith(prefix + "{")
    ]
    return {labels["state"]: n for labels, n in labelled if labels["session_id"] == session_id}


def test_a_scrape_during_a_session_shows_hosts_moving(
    client: TestClient, engine: Engine, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    managers = [
        ScriptedManager(engine, p, cloud=fenix_cloud, action="LIVE_MIGRATE") for p in ("pa", "pb")
    ]
    session_id = create(client, hosts=["cmp-0", "cmp-1", "cmp-2"])
    history: list[dict[str, float]] = []

    def observe() -> bool:
        sample = scrape(client)
        history.append(host_states(sample, session_id))
        return sample['fenix_sessions{"state": "MAINTENANCE_DONE"}'] == 1

    step_until(engine, fenix_clock, observe)
    for manager in managers:
        manager.close()
    assert history[0] == {"PENDING": 3}
    # every host goes through maintenance, and the counts always cover the three
    assert all(sum(states.values()) == 3 for states in history[:-1])
    seen = {state for states in history for state in states}
    assert {"PENDING", "IN_MAINTENANCE", "MAINTAINED"} <= seen, seen
    assert history[-2] == {"MAINTAINED": 3}
    assert history[-1] == {}  # ended: the session's gauges are gone
    final = scrape(client)
    assert final['fenix_operations_total{"kind": "move", "status": "done"}'] >= 3
    assert final["fenix_webhook_queue_depth{}"] == 0
    assert final["fenix_outbox_depth{}"] == 0


def test_webhook_queue_depth_and_lag(
    client: TestClient, engine: Engine, outbox: WebhookOutbox
) -> None:
    subscribe(client, "pa", PA)
    create(client, hosts=["cmp-0"])
    engine.run_until_idle()  # notifications queued for pa's URL; no sender runs
    pending = [d for d in outbox.deliveries() if d.state == "pending"]
    assert pending
    sample = scrape(client)
    assert sample["fenix_webhook_queue_depth{}"] == len(pending)
    assert sample["fenix_webhook_queue_lag_seconds{}"] >= 0
    assert outbox.backlog()[0] == len(pending)


def test_metrics_needs_an_admin_token_unless_told_otherwise(
    client: TestClient, engine: Engine
) -> None:
    assert error_of(client.get("/metrics"))[:2] == (401, "unauthorized")
    assert error_of(client.get("/metrics", headers=PA))[:2] == (403, "forbidden")
    bad = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert error_of(bad)[:2] == (401, "unauthorized")
    bearer = client.get("/metrics", headers={"Authorization": "Bearer admin-token"})
    assert bearer.status_code == 200
    assert "fenix_sessions" in bearer.text
    with TestClient(create_app(engine, TOKENS, metrics_token=False)) as open_client:
        assert open_client.get("/metrics").status_code == 200


def test_openapi_describes_metrics_as_text_without_a_422(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    responses = operation["responses"]
    assert set(responses) == {"200", "401", "403", "413"}
    assert [t.split(";")[0] for t in responses["200"]["content"]] == ["text/plain"]


def test_metrics_flag_and_log_format_from_the_environment() -> None:
    env = {"FENIX_API_LOG_FORMAT": "json", "FENIX_API_METRICS_WITHOUT_TOKEN": "true"}
    args = parser(env).parse_args(["--token-file", "t.json"])
    assert args.log_format == "json"
    assert args.metrics_without_token is True
    args = parser({}).parse_args(["--token-file", "t.json"])
    assert args.log_format == "text"
    assert args.metrics_without_token is False
    for bad in ({"FENIX_API_LOG_FORMAT": "xml"}, {"FENIX_API_METRICS_WITHOUT_TOKEN": "maybe"}):
        with pytest.raises(SystemExit):
            parser(bad)


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fenix_core.test_json_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_json_log_lines_parse_with_the_expected_keys(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.info("session %s created over %d host(s)", "s-1", 3, extra={"session_id": "s-1"})
    try:
        raise ValueError('bad "quote"\nnew line')
    except ValueError:
        logger.exception("step failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "session s-1 created over 3 host(s)"
    assert first["level"] == "INFO"
    assert first["logger"] == "fenix_core.test_json_logs"
    assert first["session_id"] == "s-1"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR"
    assert "ValueError" in second["exception"]


def test_log_format_json_sets_the_root_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        _configure_logging("info", "json")
        logging.getLogger("fenix_core.engine").info("session %s created", "s-2")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["logger"], line["message"]) == ("fenix_core.engine", "session s-2 created")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
