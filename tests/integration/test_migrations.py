"""The chassis migration creates exactly the tables shared/tables.py describes, on both engines."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
    from shared.db import migrate

    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT position FROM log_head").scalar_one() == 0


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
    from shared.eventlog import EventLog
    from shared.kek import Keyring
    from shared.records import NewEvent

    raw = AESGCM.generate_key(bit_length=256)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO person_keys (person_id, key, created_at) VALUES (:p, :k, :t)"),
            {"p": person_id, "k": raw, "t": SystemClock().now()},
        )
    sealed = Vault(engine, keys=Keyring(None))._seal_with(AESGCM(raw), person_id, value)
    EventLog(engine).append(f"applicant-{person_id}", 0, [NewEvent("applied", {"name": sealed})])
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
