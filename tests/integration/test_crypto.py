"""Personal data sealed per person, and erased by deleting the key (crypto-shredding), on SQLite and
PostgreSQL alike (the `engine` and `log` fixtures run both)."""

import threading

import eventlet
import pytest
import sqlalchemy as sa
from marshmallow import fields

from shared import tables as t
from shared.crypto import (
    ERASED,
    PERSON_ERASED,
    CiphertextError,
    CiphertextTampered,
    Vault,
    erase_person,
    person_stream,
)
from shared.db import write_transaction
from shared.records import NewEvent
from shared.schemas import LocalDate, Money, Personal, Schema
from tests.helpers import wait_for


class Address(Schema):
    street = Personal(fields.String(), required=True)
    city = fields.String(required=True)


class BeneficiaryRegistered(Schema):
    person_id = fields.String(required=True)
    name = Personal(fields.String(), required=True)
    tax_code = Personal(fields.String(), required=True)
    birth_date = Personal(LocalDate())
    address = fields.Nested(Address)
    grant = Money(required=True)


ZOE = {
    "person_id": "p-zoe",
    "name": "Zoë Rossi",
    "tax_code": "RSSZOE90A41A944X",
    "birth_date": "1990-01-01",
    "address": {"street": "Via Rizzoli 1", "city": "Bologna"},
    "grant": "1500.00",
}
ALI = {**ZOE, "person_id": "p-ali", "name": "Ali Bassi", "tax_code": "BSSLAI85B01A944Y"}


def register(log, vault, person):
    """The write path a service follows: dump, seal with the append's connection, append."""
    schema = BeneficiaryRegistered()
    payload = schema.dump(schema.load(person))
    with log.transaction() as tx:
        data = vault.seal_fields(schema, payload, person["person_id"], conn=tx.conn)
        return tx.append(
            f"beneficiary-{person['person_id']}", 0, [NewEvent("beneficiary_registered", data)]
        ).events[0]


def project(log, vault):
    """A tiny read model rebuilt from the log: beneficiaries by person id, personal data opened."""
    schema = BeneficiaryRegistered()
    rows = {}
    for event in log.read_all():
        if event.type == "beneficiary_registered":
            row = schema.load(vault.open_fields(schema, event.data))
            rows[row["person_id"]] = row
        elif event.type == PERSON_ERASED:
            rows[event.data["person_id"]]["erased"] = True
    return rows


def key_rows(engine, person_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.select(t.person_keys.c.wrapped_key).where(t.person_keys.c.person_id == person_id)
        ).all()


def test_seal_and_open_round_trip_any_json_value(engine):
    vault = Vault(engine)
    for value in ["Zoë Rossi", "", {"street": "Via Rizzoli 1", "n": 3}, ["a", 1, None], None, True]:
        sealed = vault.seal("p-1", value)
        assert sealed.startswith("pii:v1:p-1:") and "Rossi" not in sealed
        assert vault.open(sealed) == value
        assert Vault(engine, cache_ttl=0).open(sealed) == value  # from the table, not the cache
    assert vault.seal("p-1", "x") != vault.seal("p-1", "x")  # a fresh nonce every time
    assert vault.seal("a:b", "colon in the id") and vault.open(vault.seal("a:b", 7)) == 7


def test_personal_fields_enter_the_log_sealed_and_read_back_opened(log):
    vault = Vault(log.engine)
    event = register(log, vault, ZOE)
    stored = log.read_stream("beneficiary-p-zoe")[0].data
    assert stored["grant"] == "1500.00" and stored["address"]["city"] == "Bologna"
    for path in (stored["name"], stored["tax_code"], stored["birth_date"]):
        assert path.startswith("pii:v1:p-zoe:")
    assert stored["address"]["street"].startswith("pii:v1:p-zoe:")
    with log.engine.connect() as conn:
        raw = conn.execute(sa.select(t.events.c.data)).scalar_one()
    for plain in ("Zoë Rossi", "RSSZOE90A41A944X", "1990-01-01", "Via Rizzoli 1"):
        assert plain not in raw
    opened = vault.open_fields(BeneficiaryRegistered(), event.data)
    assert opened == BeneficiaryRegistered().dump(BeneficiaryRegistered().load(ZOE))


def test_erasure_makes_every_sealed_value_read_erased_and_records_the_event(log):
    vault = Vault(log.engine)
    zoe = register(log, vault, ZOE)
    ali = register(log, vault, ALI)
    assert vault.open(zoe.data["name"]) == "Zoë Rossi"  # the key is now in this process's cache

    result = erase_person(log, vault, "p-zoe", actor="operator:anna")

    (erased,) = result.events
    assert (erased.type, erased.stream, erased.data) == (
        PERSON_ERASED,
        person_stream("p-zoe"),
        {"person_id": "p-zoe"},
    )
    assert erased.actor == "operator:anna"
    assert key_rows(log.engine, "p-zoe") == []
    opened = vault.open_fields(BeneficiaryRegistered(), zoe.data)
    assert opened["name"] == opened["tax_code"] == opened["address"]["street"] == ERASED
    assert opened["grant"] == "1500.00" and opened["address"]["city"] == "Bologna"
    assert vault.open_fields(BeneficiaryRegistered(), ali.data)["name"] == "Ali Bassi"


def test_a_read_model_rebuilt_after_erasure_shows_it_erased(log):
    vault = Vault(log.engine)
    register(log, vault, ZOE)
    register(log, vault, ALI)
    before = project(log, vault)
    assert before["p-zoe"]["name"] == "Zoë Rossi"

    erase_person(log, vault, "p-zoe")

    # Rebuilt from scratch, in a process that never saw the key (a cold cache).
    rebuilt = project(log, Vault(log.engine))
    zoe = rebuilt["p-zoe"]
    assert zoe["erased"] is True
    assert zoe["name"] == zoe["tax_code"] == zoe["birth_date"] == ERASED
    assert zoe["address"]["street"] == ERASED
    assert str(zoe["grant"]) == "1500.00"
    assert rebuilt["p-ali"]["name"] == "Ali Bassi" and "erased" not in rebuilt["p-ali"]


def test_the_hash_chain_verifies_before_and_after_erasure(log):
    vault = Vault(log.engine)
    register(log, vault, ZOE)
    register(log, vault, ALI)
    before = log.verify()
    stored_before = [(e.position, e.data, e.hash) for e in log.read_all()]
    assert before.ok and before.checked == 2

    erase_person(log, vault, "p-zoe")

    after = log.verify()
    assert after.ok and after.checked == 3
    events = list(log.read_all())
    assert [(e.position, e.data, e.hash) for e in events[:2]] == stored_before
    assert events[2].prev_hash == before.head_hash


def test_erasing_with_a_command_id_twice_appends_once_and_spares_a_later_key(log):
    vault = Vault(log.engine)
    register(log, vault, ZOE)
    first = erase_person(log, vault, "p-zoe", command_id="erase-1")
    later = vault.seal("p-zoe", "came back after the erasure")  # a new key for new data
    again = erase_person(log, vault, "p-zoe", command_id="erase-1")
    assert again.duplicate and [e.id for e in again.events] == [e.id for e in first.events]
    assert len(log.read_stream(person_stream("p-zoe"))) == 1
    assert vault.open(later) == "came back after the erasure"


def test_a_tampered_ciphertext_fails_loudly_not_as_erased(engine):
    vault = Vault(engine)
    sealed = vault.seal("p-1", "Zoë Rossi")
    header, nonce, body = sealed.rsplit(":", 2)
    flipped = body[:5] + ("A" if body[5] != "A" else "B") + body[6:]
    for bad in (f"{header}:{nonce}:{flipped}", f"{header}:{nonce}:{body[:-4]}"):
        with pytest.raises(CiphertextTampered, match="altered, or moved"):
            vault.open(bad)
    with pytest.raises(CiphertextTampered, match="nonce"):
        vault.open(f"{header}:AAAA:{body}")


def test_a_ciphertext_moved_to_another_person_fails_loudly_not_as_erased(engine):
    vault = Vault(engine)
    zoe = vault.seal("p-zoe", "Zoë Rossi")
    vault.seal("p-ali", "Ali Bassi")  # Ali has a key of his own
    moved = zoe.replace("pii:v1:p-zoe:", "pii:v1:p-ali:")
    with pytest.raises(CiphertextTampered, match="'p-ali'"):
        vault.open(moved)
    with pytest.raises(CiphertextTampered):
        Vault(engine, cache_ttl=0).open(moved)


def test_plaintext_or_an_unknown_format_in_a_personal_field_is_an_error(engine):
    vault = Vault(engine)
    with pytest.raises(CiphertextError, match="'name' is not sealed"):
        vault.open_fields(BeneficiaryRegistered(), {"person_id": "p-1", "name": "Zoë"})
    with pytest.raises(CiphertextError, match="unknown personal value format 'v9'"):
        vault.open("pii:v9:p-1:AAAA:AAAA")
    with pytest.raises(CiphertextError, match="no 'pii:' prefix"):
        vault.open("Zoë Rossi")


def test_concurrent_workers_creating_a_persons_first_key_share_one_key(log):
    workers = 12
    barrier = threading.Barrier(workers)
    sealed: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(i):
        vault = Vault(log.engine)  # a cold cache each, as in separate processes
        try:
            barrier.wait(timeout=10)
            with log.transaction() as tx:
                sealed[i] = vault.seal("p-new", f"value {i}", conn=tx.conn)
                tx.append(f"thing-{i}", 0, [NewEvent("thing_noted", {"who": sealed[i]})])
        except BaseException as error:  # reported below: a failing thread must fail the test
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(sealed) == workers
    assert len(key_rows(log.engine, "p-new")) == 1
    reader = Vault(log.engine, cache_ttl=0)
    assert {i: reader.open(text) for i, text in sealed.items()} == {
        i: f"value {i}" for i in range(workers)
    }
    assert log.verify().ok


def test_a_key_inserted_by_a_rival_between_select_and_insert_wins(engine):
    vault = Vault(engine)
    first = vault.seal("p-1", "first")
    (original,) = key_rows(engine, "p-1")
    with write_transaction(engine) as conn:
        vault._insert_key(conn, "p-1")  # the loser's insert in the race: must change nothing
    assert key_rows(engine, "p-1") == [original]
    assert Vault(engine, cache_ttl=0).open(first) == "first"


def test_a_rolled_back_key_never_reaches_the_cache(log):
    vault = Vault(log.engine)
    with pytest.raises(RuntimeError), log.transaction() as tx:
        lost = vault.seal("p-1", "never committed", conn=tx.conn)
        raise RuntimeError("the command failed after sealing")
    assert key_rows(log.engine, "p-1") == []
    assert vault.open(lost) == ERASED  # its key never existed outside the transaction
    kept = vault.seal("p-1", "committed")
    assert Vault(log.engine, cache_ttl=0).open(kept) == "committed"


def test_another_process_sees_the_erasure_once_its_cache_entry_expires(log):
    here = Vault(log.engine)
    elsewhere = Vault(log.engine, cache_ttl=0.2)
    uncached = Vault(log.engine, cache_ttl=0)
    sealed = here.seal("p-1", "Zoë Rossi")
    assert elsewhere.open(sealed) == "Zoë Rossi"  # now cached over there

    erase_person(log, here, "p-1")

    assert here.open(sealed) == ERASED  # this process: at once
    assert uncached.open(sealed) == ERASED
    wait_for(lambda: elsewhere.open(sealed) == ERASED, timeout=5, message="the TTL to expire")


def test_on_postgres_a_first_key_in_flight_makes_a_rival_wait_then_share_it(engine):
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite serialises whole write transactions: no two can overlap")
    vault_a, vault_b = Vault(engine), Vault(engine)
    rival: dict[str, str] = {}

    def worker_b():
        rival["sealed"] = vault_b.seal("p-race", "from B")

    with write_transaction(engine) as conn_a:
        sealed_a = vault_a.seal("p-race", "from A", conn=conn_a)  # inserted, not committed
        b = eventlet.spawn(worker_b)
        wait_for(lambda: _blocked_by(engine, conn_a), message="B to wait on A's key")
        assert "sealed" not in rival
    b.wait()
    assert len(key_rows(engine, "p-race")) == 1
    reader = Vault(engine, cache_ttl=0)
    assert (reader.open(sealed_a), reader.open(rival["sealed"])) == ("from A", "from B")


def test_on_postgres_an_erasure_waits_for_an_event_being_sealed(log):
    if log.engine.dialect.name == "sqlite":
        pytest.skip("SQLite serialises whole write transactions: no two can overlap")
    vault = Vault(log.engine)
    vault.seal("p-1", "an earlier value")  # the key exists
    done: dict[str, object] = {}

    def erase():
        done["result"] = erase_person(log, Vault(log.engine), "p-1")

    with log.transaction() as tx:
        sealed = vault.seal("p-1", "in flight", conn=tx.conn)  # key row locked FOR SHARE
        eraser = eventlet.spawn(erase)
        wait_for(lambda: _blocked_by(log.engine, tx.conn), message="the erasure to wait")
        assert "result" not in done
        tx.append("thing-1", 0, [NewEvent("thing_noted", {"who": sealed})])
    eraser.wait()
    # The event committed with its key; the erasure that came after it shreds it like the rest.
    assert key_rows(log.engine, "p-1") == []
    # (read through a cold cache: `vault`, like another process, may hold the key for its TTL)
    assert Vault(log.engine, cache_ttl=0).open(log.read_stream("thing-1")[0].data["who"]) == ERASED
    assert log.verify().ok


def _blocked_by(engine, holder):
    """How many PostgreSQL backends wait on a lock that the transaction on `holder` holds."""
    holder_pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"
            ),
            {"holder": holder_pid},
        ).scalar_one()
