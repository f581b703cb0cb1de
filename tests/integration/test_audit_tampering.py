"""Each kind of tampering docs/audit.md names, done to a real log (SQLite and PostgreSQL): `verify`
reports it at exactly the position and with exactly the words the document's table gives, and so
does the document's own script on an export wherever an export can show it."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.chain import Anchor, chain_hash, envelope_of
from shared.clock import UTC
from shared.db import disable_append_only, write_transaction
from shared.records import NewEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
EVENTS = 5  # N: the head the untouched log names
VALUES = {"N": EVENTS, "P": 3, "M": 3, "C": 5, "A": 5}
ROW = re.compile(r"^\| (?P<kind>[^|]+?) \| (?P<where>[^|]+?) \|\s*(?P<reason>[^|]*?)\s*\|$", re.M)


def documented() -> dict[str, tuple[str, str]]:
    """The table of docs/audit.md: kind -> (reported at, reason), placeholders still in."""
    section = DOC.read_text().split("## What `verify` reports", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in ROW.finditer(section):
        if match["kind"] in ("tampering", "---"):
            continue
        rows[match["kind"]] = (match["where"].strip("`"), match["reason"].strip("`"))
    return rows


def filled(template: str) -> str:
    """`P+1` -> `4`, `position N is missing` -> `position 5 is missing`."""

    def value(match: re.Match[str]) -> str:
        return str(VALUES[match[1]] + (1 if match[2] else 0))

    return re.sub(r"\b([NPMCA])(\+1)?\b", value, template)


# -- tampering, as someone with SQL access (and the triggers switched off) would ---------------


def sql(engine, statement: str, **params) -> None:
    with write_transaction(engine) as conn:
        disable_append_only(conn)
        conn.execute(sa.text(statement), params)


def row(engine, position: int) -> dict:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT * FROM events WHERE position = :p"), {"p": position}
        ).one()
    return dict(found._mapping)


def envelope(stored: dict) -> dict:
    import json

    return envelope_of(
        stored["position"],
        stored["id"],
        stored["stream"],
        stored["version"],
        stored["type"],
        stored["schema_version"],
        json.loads(stored["data"]),
        stored["correlation_id"],
        stored["causation_id"],
        stored["actor"],
        _utc(stored["occurred_at"]),
        _utc(stored["recorded_at"]),
    )


def _utc(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rehash(engine, position: int, data: str | None = None) -> str:
    """Edit the event at `position` (its data, if given) and store the rule's hash for it."""
    if data is not None:
        sql(engine, "UPDATE events SET data = :d WHERE position = :p", d=data, p=position)
    stored = row(engine, position)
    digest = chain_hash(stored["prev_hash"], envelope(stored))
    sql(engine, "UPDATE events SET hash = :h WHERE position = :p", h=digest, p=position)
    return digest


def set_head(engine, position: int) -> None:
    sql(
        engine,
        "UPDATE log_head SET position = :p, hash = :h",
        p=position,
        h=row(engine, position)["hash"],
    )


def forge(engine, position: int, prev_hash: str) -> None:
    """A new event at `position`, chained to `prev_hash` with the rule's hash."""
    now = dt.datetime(2025, 1, 1, tzinfo=UTC)
    data = '{"amount":"5000.00"}'
    forged = {
        "position": position,
        "id": "00000000-0000-4000-8000-00000000f0f0",
        "stream": "forged-1",
        "version": 1,
        "type": "grant_awarded",
        "schema_version": 1,
        "data": data,
        "correlation_id": None,
        "causation_id": None,
        "actor": "intruder",
        "occurred_at": now,
        "recorded_at": now,
        "prev_hash": prev_hash,
    }
    forged["hash"] = chain_hash(prev_hash, envelope(forged))
    columns = ", ".join(forged)
    sql(
        engine,
        f"INSERT INTO events ({columns}) VALUES ({', '.join(':' + c for c in forged)})",
        **forged,
    )


def payload_edited(log, engine) -> None:
    sql(engine, "UPDATE events SET data = :d WHERE position = 3", d='{"amount":"9999.00"}')


def envelope_member_edited(log, engine) -> None:
    sql(engine, "UPDATE events SET actor = 'someone-else' WHERE position = 3")


def edited_and_rehashed(log, engine) -> None:
    rehash(engine, 3, '{"amount":"9999.00"}')


def swapped(log, engine) -> None:
    sql(engine, "UPDATE events SET position = -position WHERE position IN (3, 4)")
    sql(
        engine,
        "UPDATE events SET position = CASE position WHEN -3 THEN 4 ELSE 3 END WHERE position < 0",
    )


def deleted(log, engine) -> None:
    sql(engine, "DELETE FROM events WHERE position = 3")


def forged_into_the_middle(log, engine) -> None:
    sql(engine, "UPDATE events SET position = -(position + 1) WHERE position >= 3")
    sql(engine, "UPDATE events SET position = -position WHERE position < 0")
    forge(engine, 3, row(engine, 2)["hash"])


def forged_at_the_end(log, engine) -> None:
    forge(engine, EVENTS + 1, row(engine, EVENTS)["hash"])


def last_deleted(log, engine) -> None:
    sql(engine, "DELETE FROM events WHERE position = :p", p=EVENTS)


def last_edited_and_rehashed(log, engine) -> None:
    rehash(engine, EVENTS, '{"amount":"9999.00"}')


def relay_checkpoint(engine, position: int) -> None:
    with write_transaction(engine) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO checkpoints (name, position, updated_at) VALUES ('relay', :p, :t)"
            ),
            {"p": position, "t": dt.datetime(2025, 1, 1)},
        )


def tail_cut_checkpoint_ahead(log, engine) -> None:
    relay_checkpoint(engine, EVENTS)
    sql(engine, "DELETE FROM events WHERE position > 3")
    set_head(engine, 3)


def tail_cut_everything_rewritten(log, engine) -> None:
    sql(engine, "DELETE FROM events WHERE position > 3")
    set_head(engine, 3)


def past_rewritten(log, engine) -> None:
    rehash(engine, 3, '{"amount":"9999.00"}')
    for position in range(4, EVENTS + 1):
        sql(
            engine,
            "UPDATE events SET prev_hash = :h WHERE position = :p",
            h=row(engine, position - 1)["hash"],
            p=position,
        )
        rehash(engine, position)
    set_head(engine, EVENTS)


def forged_at_the_end_head_rewritten(log, engine) -> None:
    forged_at_the_end(log, engine)
    set_head(engine, EVENTS + 1)


# kind (as the document's table names it) -> (tampering, with the anchor?, the script sees it?)
KINDS: dict[str, tuple[Callable, bool, bool]] = {
    "an event's payload edited": (payload_edited, False, True),
    "an envelope member edited (actor, type, a timestamp, ...)": (
        envelope_member_edited,
        False,
        True,
    ),
    "an event edited and its hash recomputed by the rule": (edited_and_rehashed, False, True),
    "two events swapped (`P` and `P+1`)": (swapped, False, True),
    "an event deleted, not the last": (deleted, False, True),
    "an event forged into the middle at `P`, the later ones renumbered": (
        forged_into_the_middle,
        False,
        True,
    ),
    "an event forged at the end, the head row left alone": (forged_at_the_end, False, False),
    "the last event deleted, the head row left alone": (last_deleted, False, False),
    "the last event edited and its hash recomputed, the head row left alone": (
        last_edited_and_rehashed,
        False,
        False,
    ),
    "the tail cut after `M` and the head row rewritten; the relay had published up to `C`": (
        tail_cut_checkpoint_ahead,
        False,
        False,
    ),
    "the tail cut after `M`, the head row and the checkpoints rewritten, verified with "
    "`--anchor A:<hash>`": (tail_cut_everything_rewritten, True, True),
    "events from `P` on edited, every later hash and the head row recomputed, verified with "
    "`--anchor A:<hash>` (`A` ≥ `P`)": (past_rewritten, True, True),
    "an event forged at the end, the head row rewritten to it": (
        forged_at_the_end_head_rewritten,
        True,
        True,
    ),
}


def test_the_document_names_exactly_these_kinds():
    assert set(documented()) == set(KINDS)


@pytest.fixture
def five(log):
    for i in range(EVENTS):
        log.append(
            f"commitment-{i % 2}",
            i // 2,
            [NewEvent("payment_disbursed", {"amount": f"{100 + i}.00", "to": "Zoë"})],
            actor="op-anna",
        )
    assert log.verify().ok
    return log


@pytest.mark.parametrize("kind", list(KINDS), ids=[k[0].__name__ for k in KINDS.values()])
def test_verify_reports_each_kind_where_and_as_the_document_says(kind, five, engine, tmp_path):
    tamper, with_anchor, in_export = KINDS[kind]
    where, reason = documented()[kind]
    anchor = Anchor(*five.head()) if with_anchor else None

    tamper(five, engine)

    result = five.verify(anchor=anchor)
    if where == "not detected":
        assert result.ok, result
        return
    assert (result.ok, result.broken_at, result.reason) == (
        False,
        int(filled(where)),
        filled(reason),
    )
    if in_export:
        line = f"BROKEN at position {filled(where)}: {filled(reason)}"
        assert _script(five, tmp_path, anchor) == line


def _script(log, tmp_path, anchor: Anchor | None) -> str:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    script = tmp_path / "verify_export.py"
    script.write_text(code)
    export = tmp_path / "export.jsonl"
    with export.open("w", encoding="utf-8") as out:
        log.export(out.write)
    args = [sys.executable, str(script), str(export)]
    if anchor is not None:
        args.append(f"{anchor.position}:{anchor.hash}")
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout.strip()
