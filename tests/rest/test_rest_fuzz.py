"""The whole API fuzzed from its own OpenAPI description (Schemathesis).

Every generated request (valid and invalid bodies, odd ids, no token, an
admin's, a project's) must get an answer the description documents (status,
content type, body schema), never a 5xx; and a refused call (4xx) must leave
every row of the database as it was.

``FENIX_FUZZ_EXAMPLES`` raises the number of requests (default 300, about a
minute on a loaded 2-core machine).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fenix_core import Engine
from fenix_core.rest import WebhookOutbox, create_app
from fenix_core.testing import SimulatedCloud

from .conftest import TOKENS, small_cloud
from .db_snapshot import snapshot

EXAMPLES = int(os.environ.get("FENIX_FUZZ_EXAMPLES", "300"))
#: A schema-valid request may still be refused for its meaning (hosts unknown
#: to the cloud, an admin setting constraints without project_id): the
#: description cannot say which, so "valid data is accepted" is not checked.
EXCLUDED = [positive_data_acceptance]


@pytest.fixture
def fuzzed_engine(fenix_cloud: SimulatedCloud, fenix_engine_factory: Any) -> Engine:
    small_cloud(fenix_cloud)
    engine: Engine = fenix_engine_factory()
    engine.create_session({"hosts": ["cmp-0"]})  # something for the routes to find
    return engine


@pytest.mark.slow
@pytest.mark.no_cover  # what it reaches, traced tests reach (test_rest_bad_input.py)
def test_every_answer_is_as_described_and_refusals_write_nothing(fuzzed_engine: Engine) -> None:
    engine = fuzzed_engine
    outbox = WebhookOutbox(engine, public_url="http://fenix.test").connect()
    try:
        app = create_app(engine, TOKENS, outbox=outbox, max_body=4096)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        statuses: Counter[int] = Counter()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=st.one_of([operation.as_strategy() for operation in operations]),
            token=st.sampled_from(["admin-token", "pa-token", None]),
        )
        def call(case: Any, token: str | None) -> None:
            if token is not None:
                case.headers = {**(case.headers or {}), "X-Auth-Token": token}
            before = snapshot(engine)
            response = case.call_and_validate(excluded_checks=EXCLUDED)
            statuses[response.status_code] += 1
            if 400 <= response.status_code < 500:
                assert snapshot(engine) == before, f"{case.method} {case.path} wrote"

        call()
    finally:
        outbox.disconnect()
    # The fuzzing reached past authentication, not only the 401s.
    assert statuses[200] > 0
    assert statuses[400] > 0
    assert statuses[404] > 0
