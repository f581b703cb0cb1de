"""The event log's promises, on SQLite and PostgreSQL alike (the `log` fixture runs both)."""

import datetime as dt
import io
import json
import threading

import pytest
import sqlalchemy as sa

from shared.chain import GENESIS, chain_hash
from shared.clock import UTC, FixedClock
from shared.db import disable_append_only, write_transaction
from shared.errors import ConcurrencyError, IdempotencyKeyReused
from shared.eventlog import ANY_VERSION, EventLog, Upcasters
from shared.records import NewEvent


def ev(type_="thing_happened", **data):
    return NewEvent(type_, data or {"n": 1})


def test_append_gives_gapless_positions_versions_and_a_chain(log):
    first = log.append("call-1", 0, [ev(n=1), ev(n=2)])
    second = log.append("call-2", 0, [ev(n=3)])
    third = log.append("call-1", 2, [ev(n=4)])
    events = list(log.read_all())
    assert [e.position for e in events] == [1, 2, 3, 4]
    assert [(e.stream, e.version) for e in events] == [
        ("call-1", 1),
        ("call-1", 2),
        ("call-2", 1),
        ("call-1", 3),
    ]
    assert events[0].prev_hash == GENESIS
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.hash
    assert events[3].hash == chain_hash(events[2].hash, events[3].envelope())
    assert [e.hash for e in first.events + second.events + third.events] == [e.hash for e in events]
    assert log.head() == (4, events[-1].hash)
    assert log.verify().ok


def test_the_hash_is_sha256_of_prev_hash_and_the_jcs_envelope(log):
    import hashlib

    import rfc8785

    (event,) = log.append(
        "s-1", 0, [NewEvent("x_done", {"amount": "12.50", "name": "Zoë"})], actor="op"
    ).events
    envelope = {
        "position": 1,
        "id": event.id,
        "stream": "s-1",
        "version": 1,
        "type": "x_done",
        "schema_version": 1,
        "data": {"amount": "12.50", "name": "Zoë"},
        "correlation_id": None,
        "causation_id": None,
        "actor": "op",
        "occurred_at": event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "recorded_at": event.recorded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    expected = hashlib.sha256(GENESIS.encode() + rfc8785.dumps(envelope)).hexdigest()
    assert event.hash == expected
    (stored,) = log.read_stream("s-1")
    assert stored.hash == expected and stored.recorded_at == event.recorded_at


def test_expected_version_mismatch_raises_and_appends_nothing(log):
    log.append("s", 0, [ev()])
    with pytest.raises(ConcurrencyError) as caught:
        log.append("s", 0, [ev()])
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert log.head()[0] == 1
    log.append("s", ANY_VERSION, [ev()])
    assert log.stream_version("s") == 2


def test_fifty_threads_racing_on_one_stream_exactly_one_wins(log):
    log.append("race", 0, [ev()])
    barrier = threading.Barrier(50)
    outcomes = []

    def racer(i):
        barrier.wait()
        try:
            log.append("race", 1, [ev(i=i)])
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("lost")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 49
    assert [e.position for e in log.read_all()] == [1, 2]
    assert log.verify().ok


def test_concurrent_writers_on_many_streams_leave_no_gap(log):
    def writer(i):
        for j in range(10):
            log.append(f"s-{i}", j, [ev(j=j)])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    positions = [e.position for e in log.read_all()]
    assert positions == list(range(1, 81))
    assert log.verify().ok


def test_same_command_id_returns_the_first_result_and_appends_nothing(log):
    first = log.append("s", 0, [ev(n=1), ev(n=2)], command_id="cmd-1")
    again = log.append("s", 0, [ev(n=9)], command_id="cmd-1")
    assert again.duplicate and not first.duplicate
    assert [e.id for e in again.events] == [e.id for e in first.events]
    assert log.head()[0] == 2


BODY_A, BODY_B = "a" * 64, "b" * 64  # two request digests


def test_a_command_id_is_bound_to_its_request_digest(log):
    first = log.append("s", 0, [ev(n=1)], command_id="cmd-1", command_digest=BODY_A)
    again = log.append("s", 1, [ev(n=1)], command_id="cmd-1", command_digest=BODY_A)
    assert again.duplicate and [e.id for e in again.events] == [e.id for e in first.events]
    assert [e.id for e in log.command_events("cmd-1", digest=BODY_A)] == [first.events[0].id]
    # The same id with another body is another command under a key already taken: refused.
    with pytest.raises(IdempotencyKeyReused) as refused:
        log.append("s", 1, [ev(n=2)], command_id="cmd-1", command_digest=BODY_B)
    assert refused.value.status == 422 and list(refused.value.fields) == ["Idempotency-Key"]
    with pytest.raises(IdempotencyKeyReused):
        log.command_events("cmd-1", digest=BODY_B)
    assert log.head()[0] == 1
    # Without a digest on either side (a handler's command, a row written before digests were
    # kept) there is nothing to compare: the id alone decides, as it always did.
    assert log.command_events("cmd-1") is not None
    log.append("t", 0, [ev(n=3)], command_id="cmd-2")
    assert log.append("t", 1, [ev()], command_id="cmd-2", command_digest=BODY_B).duplicate
    assert log.head()[0] == 2


def test_update_and_delete_on_the_log_fail(log, engine):
    log.append("s", 0, [ev()])
    for statement in ("UPDATE events SET data = '{}'", "DELETE FROM events"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert log.verify().ok


def test_reading_after_a_position_in_pages_and_as_of_a_time(engine):
    clock = FixedClock(dt.datetime(2024, 1, 1, tzinfo=UTC))
    log = EventLog(engine, clock=clock)
    for i in range(25):
        log.append(f"s-{i % 3}", ANY_VERSION, [ev(i=i)])
        clock.advance(hours=1)
    assert [e.data["i"] for e in log.read_all(after=20, page=2)] == [20, 21, 22, 23, 24]
    cut = dt.datetime(2024, 1, 1, 4, tzinfo=UTC)
    assert [e.data["i"] for e in log.read_all(until=cut, page=3)] == [0, 1, 2, 3, 4]
    assert [e.version for e in log.read_stream("s-1", after_version=6)] == [7, 8]


def test_upcasters_lift_old_events_and_leave_the_row_alone(engine):
    old = EventLog(engine)
    old.append("s", 0, [NewEvent("grant_awarded", {"amount": "10.00"}, schema_version=1)])
    upcasters = Upcasters()

    @upcasters.register("grant_awarded", 1)
    def _to_v2(data):
        return {"amount": data["amount"], "currency": "EUR"}

    new = EventLog(engine, upcasters=upcasters)
    (event,) = new.read_stream("s")
    assert (event.schema_version, event.data) == (2, {"amount": "10.00", "currency": "EUR"})
    assert upcasters.current_version("grant_awarded") == 2
    with engine.connect() as conn:
        (stored,) = conn.execute(sa.text("SELECT schema_version, data FROM events")).all()
    assert (stored.schema_version, json.loads(stored.data)) == (1, {"amount": "10.00"})
    assert new.verify().ok


def _tamper(engine, sql, **params):
    with write_transaction(engine) as conn:
        disable_append_only(conn)
        conn.execute(sa.text(sql), params)


@pytest.fixture
def five(log):
    for i in range(5):
        log.append("s", i, [ev(i=i)])
    return log


def test_verify_finds_a_changed_payload(five, engine):
    _tamper(engine, "UPDATE events SET data = :d WHERE position = 3", d='{"i":99}')
    result = five.verify()
    assert (result.ok, result.broken_at) == (False, 3)
    assert "content" in result.reason


def test_verify_finds_a_removed_row(five, engine):
    _tamper(engine, "DELETE FROM events WHERE position = 2")
    result = five.verify()
    assert (result.ok, result.broken_at) == (False, 2)
    assert "missing" in result.reason


def test_verify_finds_a_removed_last_row(five, engine):
    _tamper(engine, "DELETE FROM events WHERE position = 5")
    assert (five.verify().ok, five.verify().broken_at) == (False, 5)


def test_verify_finds_reordered_rows(five, engine):
    _tamper(
        engine,
        "UPDATE events SET data = CASE position WHEN 2 THEN :b ELSE :a END WHERE position IN (2, 3)",
        a='{"i":1}',
        b='{"i":2}',
    )
    result = five.verify()
    assert (result.ok, result.broken_at) == (False, 2)


def test_verify_finds_a_recomputed_hash_without_the_next_one(five, engine):
    events = list(five.read_all())
    third = events[2]
    forged = dict(third.envelope(), data={"i": 1000})
    new_hash = chain_hash(third.prev_hash, forged)
    _tamper(
        engine,
        "UPDATE events SET data = :d, hash = :h WHERE position = 3",
        d='{"i":1000}',
        h=new_hash,
    )
    result = five.verify()
    assert (result.ok, result.broken_at) == (False, 4)
    assert "prev_hash" in result.reason


def test_export_is_json_lines_that_an_outside_script_can_verify(five):
    out = io.StringIO()
    assert five.export(out.write) == 5
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["position"] for line in lines] == [1, 2, 3, 4, 5]
    prev = GENESIS
    for line in lines:
        envelope = {k: v for k, v in line.items() if k not in ("prev_hash", "hash")}
        assert line["prev_hash"] == prev
        assert chain_hash(prev, envelope) == line["hash"]
        prev = line["hash"]
    assert prev == five.head()[1]


def test_a_transaction_is_all_or_nothing_and_wakes_listeners_after_commit(log):
    woken = []
    log.on_commit(woken.append)
    with pytest.raises(RuntimeError), log.transaction() as tx:
        tx.append("a", 0, [ev()])
        tx.append("b", 0, [ev()])
        raise RuntimeError("the handler failed")
    assert log.head()[0] == 0 and woken == []
    with log.transaction() as tx:
        tx.append("a", 0, [ev()])
        tx.append("b", 0, [ev(), ev()])
    assert log.head()[0] == 3 and woken == [3]
    assert log.verify().ok
