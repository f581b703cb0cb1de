"""A PostgreSQL schema given in the URL (`?options=-csearch_path%3D<schema>`, as operations.md
documents) isolates a log's locks as a schema given apart does: two logs in one database, each in
its schema, never share the relay's leader lock or a stream's advisory lock. No server needed:
nothing here connects."""

from __future__ import annotations

import pytest

from shared.db import make_engine, schema_in_url
from shared.leader import advisory_key, leader_lock
from shared.stream_locks import StreamLocks

SERVER = "postgresql://lavoro@db.example:5432/lavoro"


@pytest.mark.parametrize(
    ("url", "schema"),
    [
        (f"{SERVER}?options=-csearch_path%3Dcalls_staging", "calls_staging"),
        (f"{SERVER}?options=-c%20search_path%3D%22ledger%22,public&application_name=x", "ledger"),
        (f"{SERVER}?application_name=x", None),
        (SERVER, None),
        ("sqlite:////tmp/ledger.db", None),
    ],
)
def test_the_schema_a_url_selects(url, schema):
    assert schema_in_url(url) == schema


def test_two_logs_in_one_database_each_in_its_schema_share_no_lock():
    first = make_engine(f"{SERVER}?options=-csearch_path%3Dstaging")
    second = make_engine(f"{SERVER}?options=-csearch_path%3Dtraining")
    try:
        assert (first.info_schema, second.info_schema) == ("staging", "training")
        # The keys a schema given apart gets (make_engine(url, schema=...)).
        assert leader_lock(first, "relay:calls").key == advisory_key("relay:calls", "staging")
        assert leader_lock(second, "relay:calls").key == advisory_key("relay:calls", "training")
        assert StreamLocks(first).namespace == "staging"
        assert StreamLocks(second).namespace == "training"
    finally:
        first.dispose()
        second.dispose()
