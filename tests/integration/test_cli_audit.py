"""`lavoro audit verify|export` against a real service database (SQLite file and PostgreSQL)."""

import json
import urllib.parse

import sqlalchemy as sa
from typer.testing import CliRunner

from shared.cli import app
from shared.db import disable_append_only, write_transaction
from shared.records import NewEvent

runner = CliRunner()


def _env(store_url):
    url, schema = store_url
    if schema:
        url += "?options=" + urllib.parse.quote(f"-csearch_path={schema}")
    return {"LEDGER_DATABASE_URL": url}


def test_verify_passes_then_fails_at_the_altered_payment(store_url, log, engine):
    for i in range(4):
        log.append("commitment-1", i, [NewEvent("payment_disbursed", {"amount": f"{100 + i}.00"})])
    env = _env(store_url)

    ok = runner.invoke(app, ["audit", "verify", "--service", "ledger"], env=env)
    assert ok.exit_code == 0, ok.output
    assert f"OK, 4 events, head 4 {log.head()[1]}" in ok.output

    exported = runner.invoke(app, ["audit", "export", "--service", "ledger"], env=env)
    lines = [json.loads(line) for line in exported.output.splitlines()]
    assert [line["position"] for line in lines] == [1, 2, 3, 4]
    assert lines[-1]["hash"] == log.head()[1]

    with write_transaction(engine) as conn:
        disable_append_only(conn)
        conn.execute(
            sa.text('UPDATE events SET data = \'{"amount":"1000.00"}\' WHERE position = 3')
        )
    broken = runner.invoke(app, ["audit", "verify", "--service", "ledger"], env=env)
    assert broken.exit_code == 1
    assert "BROKEN at position 3" in broken.output


def test_an_unknown_service_is_a_one_line_error():
    result = runner.invoke(app, ["audit", "verify", "--service", "payroll"])
    assert result.exit_code != 0
    assert "unknown service 'payroll'" in result.output
