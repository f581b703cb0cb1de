"""`lavoro audit verify|export` against a real service database (SQLite file and PostgreSQL)."""

import json
import urllib.parse

import sqlalchemy as sa
from typer.testing import CliRunner

from shared import tables as t
from shared.canonical import canonical
from shared.chain import chain_hash
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


def test_verify_reports_a_forged_last_event_at_its_own_position_and_takes_an_anchor(
    store_url, log, engine
):
    for i in range(4):
        log.append("commitment-1", i, [NewEvent("payment_disbursed", {"amount": f"{100 + i}.00"})])
    env = _env(store_url)
    head = f"4:{log.head()[1]}"
    last = list(log.read_all())[-1]
    forged = dict(last.envelope(), position=5, id="00000000-0000-4000-8000-000000000005", version=5)
    digest = chain_hash(last.hash, forged)
    with write_transaction(engine) as conn:
        conn.execute(
            t.events.insert().values(
                {
                    **forged,
                    "data": canonical(forged["data"]),
                    "occurred_at": last.occurred_at,
                    "recorded_at": last.recorded_at,
                    "prev_hash": last.hash,
                    "hash": digest,
                }
            )
        )
    broken = runner.invoke(app, ["audit", "verify", "--service", "ledger"], env=env)
    assert broken.exit_code == 1
    assert "ledger: BROKEN at position 5: position 5 is beyond the head (4)" in broken.output

    with write_transaction(engine) as conn:
        disable_append_only(conn)
        conn.execute(sa.text("DELETE FROM events WHERE position >= 4"))
        conn.execute(sa.text("UPDATE log_head SET position = 3, hash = :h"), {"h": last.prev_hash})
    cut = runner.invoke(app, ["audit", "verify", "--service", "ledger"], env=env)
    assert cut.exit_code == 0, cut.output  # the database alone cannot tell
    anchored = runner.invoke(
        app, ["audit", "verify", "--service", "ledger", "--anchor", head], env=env
    )
    assert anchored.exit_code == 1
    assert "BROKEN at position 4: position 4 is missing (the anchor is at 4)" in anchored.output
    bad = runner.invoke(app, ["audit", "verify", "--all", "--anchor", head], env=env)
    assert bad.exit_code == 1 and "with --service" in bad.output
