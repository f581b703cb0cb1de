"""The chassis tables: event log, head, commands, snapshots, person keys, inbox, dead letters,
checkpoints; and the triggers that make the log append-only on SQLite and PostgreSQL.

Every service's own history starts from this revision (`down_revision = "0001_chassis"`).

Revision ID: 0001_chassis
Revises:
"""

from alembic import op

from shared.tables import metadata

revision = "0001_chassis"
down_revision = None
branch_labels = ("chassis",)
depends_on = None

_SQLITE = [
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END",
    "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
    "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END",
]
_POSTGRES = [
    """CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'the event log is append-only (% refused)', TG_OP;
    END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION events_append_only()",
    "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()",
]


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind)
    for statement in _SQLITE if bind.dialect.name == "sqlite" else _POSTGRES:
        op.execute(statement)
    op.execute("INSERT INTO log_head (id, position, hash) VALUES (1, 0, '" + "0" * 64 + "')")


def downgrade() -> None:
    raise NotImplementedError("the event log is never dropped by a migration")
