"""fenix_core.store.json_text.dumps: json.dumps's text, for every value."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fenix_core.store.json_text import dumps

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)
_KEYS = st.one_of(st.text(), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_KEYS, inner, max_size=4),
    ),
    max_leaves=20,
)


@given(_VALUES)
@example({"é": "ü\u2028\x00", 1: [math.inf, -math.inf], None: (True, False)})
@example({})
@example([])
def test_dumps_gives_json_dumps_text(value: Any) -> None:
    assert dumps(value) == json.dumps(value)


def test_a_value_json_cannot_encode_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        dumps({"a": {1, 2}})
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        json.dumps({"a": {1, 2}})


def test_the_database_binds_json_columns_with_it() -> None:
    """open_database gives SQLAlchemy this serializer (a stored body reads
    back as it was written)."""
    from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

    from fenix_core.store.database import open_database

    engine = open_database("sqlite://")
    assert engine.dialect._json_serializer is dumps  # type: ignore[attr-defined]
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("body", JSON))
    table.create(engine)
    body = {"host": "cmp-0", "n": [1, 2.5, None], "ok": True}
    with engine.begin() as db:
        db.execute(insert(table).values(id=1, body=body))
    with engine.connect() as db:
        assert db.execute(select(table.c.body)).scalar_one() == body
        assert db.exec_driver_sql("SELECT body FROM t").scalar_one() == json.dumps(body)


def test_psycopg_takes_it_without_a_resource_leak_warning(caplog: pytest.LogCaptureFixture) -> None:
    """SQLAlchemy's psycopg dialect gives this function to psycopg for each
    new connection (set_json_dumps); psycopg keeps a dumper per function's
    code and logs "may cause a resource leak" for a closure: every worker's
    connection logged it."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg.adapt import AdaptersMap
    from psycopg.types.json import set_json_dumps

    with caplog.at_level("WARNING", logger="psycopg"):
        set_json_dumps(dumps, AdaptersMap(psycopg.adapters))
    assert not [r for r in caplog.records if "leak" in r.getMessage()]
