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
