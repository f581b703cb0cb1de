"""Replay (read + upcast + fold) throughput, against a bare SELECT + JSON decode of the same rows."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench.common import PG_URL, drop_schema, emit, figure, fresh_schema, timed
from shared.db import make_engine, migrate
from shared.eventlog import EventLog, Upcasters
from shared.records import NewEvent

EVENTS = int(os.environ.get("BENCH_REPLAY_EVENTS", "100000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def _fill(log: EventLog) -> None:
    for batch in range(EVENTS // 1000):
        log.append(
            f"line-{batch % 3}-{batch}",
            0,
            [
                NewEvent(
                    "payment_disbursed",
                    {"amount": f"{i}.50", "line": batch % 3, "ref": f"p-{batch}-{i}"},
                    schema_version=1,
                )
                for i in range(1000)
            ],
        )


def _upcasters() -> Upcasters:
    upcasters = Upcasters()

    @upcasters.register("payment_disbursed", 1)
    def _v2(data: dict) -> dict:
        return {**data, "currency": "EUR"}

    return upcasters


def ours(log: EventLog) -> float:
    totals: dict[int, int] = {}

    def run() -> None:
        for event in log.read_all(page=5000):
            line = event.data["line"]
            totals[line] = totals.get(line, 0) + 1

    seconds = timed(run)
    assert sum(totals.values()) == EVENTS
    return EVENTS / seconds


def anchor(log: EventLog) -> float:
    raw = log.engine.raw_connection()
    count = 0

    def run() -> None:
        nonlocal count
        cur = raw.cursor()
        cur.execute(
            "SELECT position, id, stream, version, type, schema_version, data, correlation_id, causation_id, actor, occurred_at, recorded_at, prev_hash, hash FROM events ORDER BY position"
        )
        for row in cur.fetchall():
            json.loads(row[6])
            count += 1

    seconds = timed(run)
    raw.close()
    assert count == EVENTS
    return EVENTS / seconds


def measure(engine) -> dict:
    migrate(engine)
    _fill(EventLog(engine))
    log = EventLog(engine, upcasters=_upcasters())
    best_ours = max(ours(log) for _ in range(ROUNDS))
    best_anchor = max(anchor(log) for _ in range(ROUNDS))
    return figure(best_ours, "events/s", best_anchor)


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["replay_sqlite"] = measure(make_engine(f"sqlite:///{Path(tmp) / 'replay.db'}"))
    schema = fresh_schema("bench_replay")
    try:
        results["replay_postgres"] = measure(make_engine(PG_URL, schema=schema))
    finally:
        drop_schema(schema)
    emit(results)


if __name__ == "__main__":
    main()
