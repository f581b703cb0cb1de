"""The seed's real programme recorded through the HTTP API, on SQLite and PostgreSQL, reads back
exactly the published figures; the read models rebuilt from the log agree; then
`lavoro audit verify --service ledger` passes, and fails at the right position once a payment row
is altered behind the triggers' back."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from services.ledger import demo as seed
from services.ledger import readmodels
from services.ledger.service import LedgerService
from shared.cli import app
from shared.db import disable_append_only, write_transaction
from tests.kit.service import Running, database_of, database_url, without_broker
from tests.service.ledger.builders import record_seed

pytestmark = pytest.mark.integration
FIGURES = ("programmed", "admitted", "legally_binding", "disbursed")


@pytest.fixture
def ledger(container_factory, store_url) -> Running:
    """The ledger's HTTP API, no broker, on the test's SQLite or PostgreSQL database."""
    return without_broker(container_factory, LedgerService, database_of(store_url))


def test_the_seed_reads_back_the_published_figures_and_its_log_verifies(ledger, store_url):
    client, log = ledger.client, ledger.log
    sent = record_seed(client)
    assert sent == 2 + len(seed.COMMITMENTS) + sum(len(c.payments) for c in seed.COMMITMENTS)

    progress = client.get(f"/projects/{seed.CUP}/progress").json()
    assert {k: progress["total"][k] for k in FIGURES} == {
        "programmed": "4000000.00",
        "admitted": "4000000.00",
        "legally_binding": "4000000.00",
        "disbursed": "605305.62",
    }
    assert progress["disbursed_percent"] == "15.1"
    by_line = {line["budget_line"]: line for line in progress["budget_lines"]}
    assert set(by_line) == {"employment_services", "safeguarding", "labour_policies"}
    for line in by_line.values():  # every line fully committed, none paid past its commitments
        assert line["legally_binding"] == line["admitted"] == line["programmed"]
    commitments = client.get(f"/projects/{seed.CUP}/commitments").json()["commitments"]
    assert len(commitments) == len(seed.COMMITMENTS)
    assert {c["kind"] for c in commitments} == {"convention", "contract", "grant"}
    assert client.get(f"/projects/{seed.CUP}/overdue").json()["late"] == []

    # The read models rebuilt from the log are the same books.
    readmodels.projection.rebuild(log)
    assert client.get(f"/projects/{seed.CUP}/progress").json() == progress

    runner = CliRunner()
    env = {"LEDGER_DATABASE_URL": database_url(store_url)}
    verified = runner.invoke(app, ["audit", "verify", "--service", "ledger"], env=env)
    head_position, head_hash = log.head()
    assert verified.exit_code == 0, verified.output
    assert f"OK, {head_position} events, head {head_position} {head_hash}" in verified.output

    payment = next(e for e in log.read_all() if e.type == "payment_disbursed")
    altered = {**payment.data, "amount": "1.00"}
    with write_transaction(log.engine) as conn:
        disable_append_only(conn)
        conn.execute(
            sa.text("UPDATE events SET data = :data WHERE position = :position"),
            {
                "data": json.dumps(altered, sort_keys=True, separators=(",", ":")),
                "position": payment.position,
            },
        )
    broken = runner.invoke(app, ["audit", "verify", "--service", "ledger"], env=env)
    assert broken.exit_code == 1
    assert f"BROKEN at position {payment.position}" in broken.output
