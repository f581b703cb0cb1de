"""Append throughput (events/s), 1 and 100 events per transaction, on SQLite and PostgreSQL,
against the `eventsourcing` library's application save on the same database."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy.engine import make_url

from bench.common import PG_URL, drop_schema, emit, figure, fresh_schema, timed
from shared.db import make_engine, migrate, normalise_url
from shared.eventlog import EventLog
from shared.records import NewEvent

ONE = int(os.environ.get("BENCH_APPEND_ONE", "2000"))
BATCHES = int(os.environ.get("BENCH_APPEND_BATCHES", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def ours(engine, per_tx: int, transactions: int) -> float:
    migrate(engine)
    log = EventLog(engine)
    payload = {"amount": "1250.00", "line": "employment_services", "reference": "conv-2024-001"}
    version = 0

    def run() -> None:
        nonlocal version
        for _ in range(transactions):
            log.append("bench-1", version, [NewEvent("payment_disbursed", payload)] * per_tx)
            version += per_tx

    seconds = timed(run)
    assert log.head()[0] == per_tx * transactions
    return per_tx * transactions / seconds


class Account(Aggregate):
    """The anchor's aggregate: the same payload as ours, one event per disbursement."""

    @event("Opened")
    def __init__(self) -> None:
        pass

    @event("PaymentDisbursed")
    def disburse(self, amount: str, line: str, reference: str) -> None:
        pass


def anchor(env: dict[str, str], per_tx: int, transactions: int) -> float:
    app = Application(env=env)
    account = Account()
    app.save(account)

    def run() -> None:
        for _ in range(transactions):
            for _ in range(per_tx):
                account.disburse("1250.00", "employment_services", "conv-2024-001")
            app.save(account)

    seconds = timed(run)
    return per_tx * transactions / seconds


def _sqlite_round(tmp: Path, per_tx: int, transactions: int, n: int) -> tuple[float, float]:
    value = ours(make_engine(f"sqlite:///{tmp / f'ours{per_tx}-{n}.db'}"), per_tx, transactions)
    es_env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(tmp / f"es{per_tx}-{n}.db"),
    }
    return value, anchor(es_env, per_tx, transactions)


def _postgres_round(per_tx: int, transactions: int) -> tuple[float, float]:
    schema = fresh_schema("bench_append")
    es_schema = fresh_schema("bench_es")
    try:
        value = ours(make_engine(PG_URL, schema=schema), per_tx, transactions)
        url = make_url(normalise_url(PG_URL))
        make_engine(PG_URL, schema=es_schema).dispose()  # creates the schema
        es_env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.database or "test",
            "POSTGRES_HOST": url.host or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": url.username or "postgres",
            "POSTGRES_PASSWORD": url.password or "",
            "POSTGRES_SCHEMA": es_schema,
        }
        return value, anchor(es_env, per_tx, transactions)
    finally:
        drop_schema(schema)
        drop_schema(es_schema)


def main() -> None:
    """Best of ROUNDS for ours and for the anchor alike, each round on fresh databases."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for per_tx, transactions in ((1, ONE), (100, BATCHES)):
            runs = [_sqlite_round(Path(tmp), per_tx, transactions, n) for n in range(ROUNDS)]
            best = max(r[0] for r in runs), max(r[1] for r in runs)
            results[f"append_sqlite_{per_tx}"] = figure(best[0], "events/s", best[1])
    for per_tx, transactions in ((1, ONE), (100, BATCHES)):
        runs = [_postgres_round(per_tx, transactions) for _ in range(ROUNDS)]
        best = max(r[0] for r in runs), max(r[1] for r in runs)
        results[f"append_postgres_{per_tx}"] = figure(best[0], "events/s", best[1])
    emit(results)


if __name__ == "__main__":
    main()
