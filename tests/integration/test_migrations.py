"""The chassis migrations create exactly the tables shared/tables.py describes, on both engines,
and a log written at an earlier revision still loads after the later ones."""

import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.chain import chain_hash, envelope_of
from shared.db import migrate
from shared.eventlog import EventLog
from shared.tables import metadata


def test_the_migrated_schema_matches_the_table_definitions(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [d for d in compare_metadata(context, metadata) if not _alembic_own(d)]
    assert diff == []


def _alembic_own(difference) -> bool:
    # alembic_version is Alembic's bookkeeping, not a chassis table.
    return difference[0] == "remove_table" and difference[1].name == "alembic_version"


def test_migrating_twice_changes_nothing(engine):
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT position FROM log_head").scalar_one() == 0


def _append_as_at_0001(engine, stream: str, type_: str, data: dict, command_id=None) -> str:
    """One event (and its command row) written exactly as the log at revision 0001 wrote them:
    today's EventLog reads and writes columns later revisions added. Returns the event's id."""
    import sqlalchemy as sa

    from shared.canonical import canonical

    event_id, at = str(uuid.uuid4()), "2024-03-01T09:30:00.000000Z"
    stored_at = "2024-03-01 09:30:00.000000" if engine.dialect.name == "sqlite" else at
    with engine.begin() as conn:
        position, prev = conn.execute(sa.text("SELECT position, hash FROM log_head")).one()
        version = conn.execute(
            sa.text("SELECT COUNT(*) FROM events WHERE stream = :s"), {"s": stream}
        ).scalar_one()
        position, version = position + 1, version + 1
        envelope = envelope_of(
            position, event_id, stream, version, type_, 1, data, None, None, "ada", at, at
        )
        digest = chain_hash(prev, envelope)
        conn.execute(
            sa.text(
                "INSERT INTO events (position, id, stream, version, type, schema_version, data, "
                "correlation_id, causation_id, actor, occurred_at, recorded_at, prev_hash, hash) "
                "VALUES (:position, :id, :stream, :version, :type, 1, :data, NULL, NULL, 'ada', "
                ":at, :at, :prev, :hash)"
            ),
            {
                "position": position,
                "id": event_id,
                "stream": stream,
                "version": version,
                "type": type_,
                "data": canonical(data),
                "at": stored_at,
                "prev": prev,
                "hash": digest,
            },
        )
        conn.execute(
            sa.text("UPDATE log_head SET position = :p, hash = :h"), {"p": position, "h": digest}
        )
        if command_id is not None:
            conn.execute(
                sa.text(
                    "INSERT INTO commands (command_id, stream, first_position, last_position, "
                    "recorded_at) VALUES (:c, :s, :p, :p, :at)"
                ),
                {"c": command_id, "s": stream, "p": position, "at": stored_at},
            )
    return event_id


def _at_chassis(store_url):
    """A database as revision 0001 left it: person keys stored raw."""
    from alembic import command

    from shared.db import alembic_config, make_engine

    url, schema = store_url
    engine = make_engine(url, schema=schema)
    command.upgrade(alembic_config(engine), "0001_chassis")
    return engine


def _old_person(engine, person_id: str, value: str) -> tuple[bytes, str]:
    """A raw key row and an event sealed with it, as the code before 0002 wrote them."""
    import sqlalchemy as sa
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from shared.clock import SystemClock
    from shared.crypto import Vault
    from shared.kek import Keyring

    raw = AESGCM.generate_key(bit_length=256)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO person_keys (person_id, key, created_at) VALUES (:p, :k, :t)"),
            {"p": person_id, "k": raw, "t": SystemClock().now()},
        )
    sealed = Vault(engine, keys=Keyring(None))._seal_with(AESGCM(raw), person_id, value)
    _append_as_at_0001(engine, f"applicant-{person_id}", "applied", {"name": sealed})
    return raw, sealed


def test_keys_stored_raw_are_wrapped_by_the_upgrade_and_old_logs_still_load(store_url):
    import sqlalchemy as sa

    from shared.crypto import Vault
    from shared.db import migrate
    from shared.eventlog import EventLog
    from shared.kek import Kek, Keyring

    engine = _at_chassis(store_url)
    raw, sealed = _old_person(engine, "p-old", "Zoë Rossi")
    log = EventLog(engine)
    before = (list(log.read_all()), log.verify())
    kek = Kek.generate()

    migrate(engine, keyring=Keyring(kek))

    with engine.connect() as conn:
        (row,) = conn.execute(sa.text("SELECT * FROM person_keys")).mappings().all()
    assert set(row) == {"person_id", "kek_id", "wrapped_key", "created_at"}
    assert row["kek_id"] == kek.id and raw not in bytes(row["wrapped_key"])
    assert Vault(engine, keys=Keyring(kek), cache_ttl=0).open(sealed) == "Zoë Rossi"
    assert (list(log.read_all()), log.verify()) == before
    assert log.read_stream("applicant-p-old")[0].data == {"name": sealed}
    engine.dispose()


def test_an_upgrade_with_raw_keys_and_no_kek_stops_and_says_what_to_set(store_url):
    import pytest
    import sqlalchemy as sa

    from shared.db import migrate
    from shared.kek import KekConfigError, Keyring

    engine = _at_chassis(store_url)
    raw, _ = _old_person(engine, "p-old", "Zoë Rossi")
    with pytest.raises(KekConfigError, match="1 key\\(s\\) to wrap: set LAVORO_KEK_FILE"):
        migrate(engine, keyring=Keyring(None))
    with engine.connect() as conn:  # nothing half done: still the old table, the key in it
        assert bytes(conn.execute(sa.text("SELECT key FROM person_keys")).scalar_one()) == raw
    engine.dispose()


def test_a_log_written_at_0001_loads_after_0003_and_its_commands_still_repeat(store_url):
    engine = _at_chassis(store_url)
    try:
        event_id = _append_as_at_0001(engine, "s", "noted", {"n": 1}, command_id="old-key")
        migrate(engine)
        log = EventLog(engine)
        assert log.verify().ok
        assert [e.id for e in log.read_stream("s")] == [event_id]
        # Its command still answers as a repeat, whatever digest asks (none was kept for it).
        assert [e.id for e in log.command_events("old-key", digest="f" * 64)] == [event_id]
        repeated = log.append("s", 1, [], command_id="old-key", command_digest="f" * 64)
        assert repeated.duplicate and log.head()[0] == 1
    finally:
        engine.dispose()
