"""The chassis tables: event log, head, commands, snapshots, person keys, inbox, dead letters,
checkpoints; and the triggers that make the log append-only on SQLite and PostgreSQL.

Every service's own history starts from this revision (`down_revision = "0001_chassis"`).

Revision ID: 0001_chassis
Revises:
"""

import sqlalchemy as sa
from alembic import op

# Written out, not `metadata.create_all()`: a revision is a fixed step, and shared/tables.py will
# move on. tests/integration/test_migrations.py holds the migrated schema equal to tables.py.
TS = sa.DateTime(timezone=True)

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
    op.create_table(
        "events",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.String(36)),
        sa.Column("causation_id", sa.String(36)),
        sa.Column("actor", sa.String(200)),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("stream", "version", name="uq_events_stream_version"),
    )
    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(200), primary_key=True),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("first_position", sa.BigInteger),
        sa.Column("last_position", sa.BigInteger),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.create_table(
        "snapshots",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("taken_at", TS, nullable=False),
    )
    op.create_table(
        "person_keys",
        sa.Column("person_id", sa.String(100), primary_key=True),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("handled_at", TS, nullable=False),
    )
    op.create_index("ix_inbox_source_stream", "inbox", ["source", "stream", "position"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("parked_at", TS, nullable=False),
        sa.Column("resolved_at", TS),
    )
    op.create_index("ix_dead_letters_stream", "dead_letters", ["source", "stream", "status"])
    op.create_index("ix_dead_letters_event_id", "dead_letters", ["event_id"])
    op.create_table(
        "checkpoints",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    for statement in _SQLITE if bind.dialect.name == "sqlite" else _POSTGRES:
        op.execute(statement)
    op.execute("INSERT INTO log_head (id, position, hash) VALUES (1, 0, '" + "0" * 64 + "')")


def downgrade() -> None:
    raise NotImplementedError("the event log is never dropped by a migration")
