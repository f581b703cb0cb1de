"""The unit of work (shared/unit_of_work.py), one suite on three stores: the in-memory one of the
unit tests, SQLite and PostgreSQL (the service's real `Store`).

The domain is a toy on purpose: accounts with a limit, and transfers between them, so that a
decision reads two streams and writes one or both."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from marshmallow import fields

from shared import unit_of_work
from shared.contracts import BrokenContract, Contracts
from shared.db import make_engine, migrate
from shared.dependencies import Store
from shared.errors import ConcurrencyError, RuleViolation
from shared.eventlog import EventLog
from shared.records import Aggregate, NewEvent, RecordedEvent
from shared.schemas import Money, Schema
from shared.testing import MemoryStore
from tests import infra

LIMIT = Decimal("100.00")


@dataclasses.dataclass(frozen=True)
class Account:
    balance: Decimal = Decimal("0.00")


def _evolve(state: Account, event: RecordedEvent) -> Account:
    sign = 1 if event.type == "deposited" else -1
    return Account(state.balance + sign * Decimal(event.data["amount"]))


ACCOUNT = Aggregate("account", Account, _evolve)


class MovedV1(Schema):
    account_id = fields.String(required=True)
    amount = Money(required=True)


CONTRACTS = Contracts(emitted={"deposited": (1, MovedV1), "withdrawn": (1, MovedV1)})


def moved(type_: str, account_id: str, amount: str) -> NewEvent:
    return NewEvent(type_, {"account_id": account_id, "amount": amount})


def deposit(account_id: str, amount: str) -> unit_of_work.Plan:
    def plan(session: unit_of_work.Session) -> unit_of_work.Decision:
        account = session.load(ACCOUNT, f"account-{account_id}")
        if account.balance + Decimal(amount) > LIMIT:
            raise RuleViolation("over the limit", account_id=account_id)
        return {f"account-{account_id}": [moved("deposited", account_id, amount)]}

    return plan


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore(contracts=CONTRACTS)
        return
    # The service's real Store, over a fresh SQLite file or PostgreSQL schema.
    url, schema = f"sqlite:///{tmp_path / 'log.db'}", None
    if request.param == "postgres":
        url, schema = infra.postgres_url(), "t_" + uuid.uuid4().hex[:16]
    engine = make_engine(url, schema=schema)
    migrate(engine)
    yield Store(EventLog(engine), {}, deferred=False, contracts=CONTRACTS)
    engine.dispose()
    if schema is not None:
        infra.drop_schema(url, schema)


def history(store: Any, stream: str) -> list[tuple[str, str]]:
    loaded = store.load(
        Aggregate("raw", list, lambda s, e: [*s, (e.type, e.data["amount"])]), stream
    )
    return loaded.state


def test_a_decision_is_appended_and_answered_with_its_events_and_ids(store: Any) -> None:
    outcome = unit_of_work.run(store, deposit("a", "40.00"))

    assert outcome.types == ["deposited"] and not outcome.repeated
    reply = outcome.reply()
    assert reply["account_id"] == "a" and reply["repeated"] is False
    assert [(e["type"], e["stream"], e["version"]) for e in reply["events"]] == [
        ("deposited", "account-a", 1)
    ]
    assert history(store, "account-a") == [("deposited", "40.00")]


def test_a_refusal_stores_nothing(store: Any) -> None:
    with pytest.raises(RuleViolation):
        unit_of_work.run(store, deposit("a", "140.00"))
    assert history(store, "account-a") == []


def test_a_repeated_command_returns_its_first_events_without_deciding_again(store: Any) -> None:
    first = unit_of_work.run(store, deposit("a", "60.00"), command_id="cmd-1")
    # Deciding again would refuse (60 + 60 > 100): the repeat must not decide at all.
    again = unit_of_work.run(store, deposit("a", "60.00"), command_id="cmd-1")

    assert again.repeated and [e.id for e in again.events] == [e.id for e in first.events]
    assert history(store, "account-a") == [("deposited", "60.00")]


def test_a_repeat_of_a_command_on_several_streams_answers_with_all_its_events(store: Any) -> None:
    def two(session: unit_of_work.Session) -> unit_of_work.Decision:
        return {
            "account-a": [moved("deposited", "a", "1.00")],
            "account-b": [moved("deposited", "b", "2.00")],
        }

    first = unit_of_work.run(store, two, command_id="both")
    again = unit_of_work.run(store, two, command_id="both")
    assert [e.stream for e in again.events] == ["account-a", "account-b"]
    assert [e.id for e in again.events] == [e.id for e in first.events]


def test_one_command_run_twice_at_once_appends_once(store: Any) -> None:
    results: list[unit_of_work.Outcome] = []
    # Both runs are past the command check before either loads (and so before either appends).
    both_deciding = threading.Barrier(2, timeout=10)

    def slow_plan(session: unit_of_work.Session) -> unit_of_work.Decision:
        if not getattr(local, "met", False):
            local.met = True
            both_deciding.wait()
        return deposit("a", "10.00")(session)

    local = threading.local()

    threads = [
        threading.Thread(
            target=lambda: results.append(unit_of_work.run(store, slow_plan, command_id="k"))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(results) == 2 and sorted(r.repeated for r in results) == [False, True]
    assert history(store, "account-a") == [("deposited", "10.00")]


def transfer(source: str, target: str, amount: str, *, meddle: Any = None) -> unit_of_work.Plan:
    """Withdraw from `source` into `target`; refused if the target would pass the limit.
    Reads both, writes only `source` when `amount` is zero (a no-op deposit)."""

    def plan(session: unit_of_work.Session) -> unit_of_work.Decision:
        session.load(ACCOUNT, f"account-{source}")
        to = session.load(ACCOUNT, f"account-{target}")
        if meddle is not None:
            meddle()
        if to.balance + Decimal(amount) > LIMIT:
            raise RuleViolation("the target would pass its limit", account_id=target)
        return {f"account-{source}": [moved("withdrawn", source, amount)]}

    return plan


def test_a_stream_read_and_not_written_is_checked_too(store: Any) -> None:
    """The decision on the target's balance must not stand if that balance moved meanwhile."""
    unit_of_work.run(store, deposit("t", "50.00"))
    attempts: list[int] = []

    def meddle() -> None:
        attempts.append(1)
        if len(attempts) == 1:  # another command fills the target between load and append
            unit_of_work.run(store, deposit("t", "40.00"))

    with pytest.raises(RuleViolation):
        unit_of_work.run(store, transfer("s", "t", "20.00", meddle=meddle))

    assert len(attempts) == 2  # decided again on the fresh balance, and refused
    assert history(store, "account-s") == []


def test_all_streams_of_a_decision_commit_together_or_not_at_all(store: Any) -> None:
    unit_of_work.run(store, deposit("b", "10.00"))

    def both(session: unit_of_work.Session) -> unit_of_work.Decision:
        session.load(ACCOUNT, "account-a")
        # `account-b` is not read, so it is expected new (version 0), and it is not: refused.
        return {
            "account-a": [moved("deposited", "a", "5.00")],
            "account-b": [moved("deposited", "b", "5.00")],
        }

    with pytest.raises(ConcurrencyError):
        unit_of_work.run(store, both, attempts=2)
    assert history(store, "account-a") == []
    assert history(store, "account-b") == [("deposited", "10.00")]


def test_a_race_lost_every_time_gives_up_with_the_concurrency_error(store: Any) -> None:
    calls: list[int] = []

    def always_overtaken(session: unit_of_work.Session) -> unit_of_work.Decision:
        decision = deposit("a", "1.00")(session)
        calls.append(1)
        store_append_behind_the_plans_back(store, "a")
        return decision

    with pytest.raises(ConcurrencyError):
        unit_of_work.run(store, always_overtaken, attempts=3)
    assert len(calls) == 3


def store_append_behind_the_plans_back(store: Any, account_id: str) -> None:
    stream = f"account-{account_id}"
    version = store.load(ACCOUNT, stream).version
    with store.transaction() as writer:
        writer.append(stream, version, [moved("deposited", account_id, "0.01")])


def test_a_payload_that_breaks_its_contract_is_never_appended(store: Any) -> None:
    def broken(session: unit_of_work.Session) -> unit_of_work.Decision:
        session.load(ACCOUNT, "account-a")
        return {"account-a": [NewEvent("deposited", {"account_id": "a", "amount": 12.5})]}

    def unknown(session: unit_of_work.Session) -> unit_of_work.Decision:
        return {"account-a": [NewEvent("stolen", {"account_id": "a"})]}

    with pytest.raises(BrokenContract, match="amount"):
        unit_of_work.run(store, broken)
    with pytest.raises(BrokenContract, match="stolen"):
        unit_of_work.run(store, unknown)
    assert history(store, "account-a") == []


def test_a_decision_of_nothing_appends_nothing(store: Any) -> None:
    outcome = unit_of_work.run(store, lambda session: {"account-a": []}, command_id="noop")
    assert outcome.events == () and outcome.reply(account_id="a")["account_id"] == "a"
    assert history(store, "account-a") == []


def test_commands_on_one_stream_decide_one_after_another(store: Any) -> None:
    """Ten deposits at once, each allowed a single attempt: without the per-stream gate most
    would lose the race to the others (the plan yields between its load and its append)."""
    failures: list[BaseException] = []

    def yielding(session: unit_of_work.Session) -> unit_of_work.Decision:
        decision = deposit("a", "10.00")(session)
        time.sleep(0.002)
        return decision

    def one() -> None:
        try:
            unit_of_work.run(store, yielding, attempts=1)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            failures.append(error)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert failures == []
    assert len(history(store, "account-a")) == 10


def test_replicas_on_one_postgresql_log_decide_one_after_another() -> None:
    """Two replicas (two engines, two stores, as two processes would have) take 20 deposits on
    one stream at once. Their in-process gates cannot see each other; the stream's advisory lock
    must: every plan decides once, on the stream as the other replica left it, and never races
    (each run is allowed a single attempt)."""
    url, schema = infra.postgres_url(), "t_" + uuid.uuid4().hex[:16]
    engines = [make_engine(url, schema=schema) for _ in range(2)]
    migrate(engines[0])
    replicas = [
        Store(EventLog(engine), {}, deferred=False, contracts=CONTRACTS) for engine in engines
    ]
    decided: list[int] = []
    failures: list[BaseException] = []

    def yielding(session: unit_of_work.Session) -> unit_of_work.Decision:
        decision = deposit("a", "5.00")(session)
        decided.append(1)
        time.sleep(0.002)  # a yield point between the read and the append, where a race would be
        return decision

    def one(replica: Store) -> None:
        try:
            unit_of_work.run(replica, yielding, attempts=1)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            failures.append(error)

    threads = [threading.Thread(target=one, args=(replicas[n % 2],)) for n in range(20)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert failures == []
        assert len(decided) == 20
        assert len(history(replicas[1], "account-a")) == 20
    finally:
        for engine in engines:
            engine.dispose()
        infra.drop_schema(url, schema)


def test_ids_of_several_values_are_listed_under_the_plural() -> None:
    store = MemoryStore(contracts=CONTRACTS)

    def two(session: unit_of_work.Session) -> unit_of_work.Decision:
        return {
            "account-a": [moved("deposited", "a", "1.00")],
            "account-b": [moved("deposited", "b", "1.00")],
        }

    reply = unit_of_work.run(store, two).reply()
    assert reply["account_ids"] == ["a", "b"] and "account_id" not in reply


def test_a_stream_held_past_the_lock_timeout_is_a_409_for_that_stream(monkeypatch) -> None:
    from shared import stream_locks

    url, schema = infra.postgres_url(), "t_" + uuid.uuid4().hex[:16]
    engine = make_engine(url, schema=schema)
    locks = stream_locks.stream_locks(engine)
    assert stream_locks.stream_locks(engine) is locks
    monkeypatch.setattr(stream_locks, "LOCK_TIMEOUT_MS", 50)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.hold("account-a"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(stream_locks.StreamBusy) as busy, locks.hold("account-a"):
            pass
        assert busy.value.status == 409 and busy.value.stream == "account-a"
        with locks.hold("account-b"):  # another stream is free
            pass
    finally:
        release.set()
        thread.join(10)
        engine.dispose()
        infra.drop_schema(url, schema)
    with locks.hold("account-a"):  # released with its transaction
        pass
