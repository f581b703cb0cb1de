"""The chassis tables every service database has, as the chassis's Alembic revisions leave them."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from shared.clock import UTC

metadata = sa.MetaData()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in and out, on PostgreSQL (timestamptz) and SQLite (ISO text) alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store UTC, timezone-aware")
        value = value.astimezone(UTC)
        # SQLite keeps text and compares it as text: store it naive-UTC with microseconds so that
        # lexicographic order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


events = sa.Table(
    "events",
    metadata,
    # INTEGER on SQLite makes `position` the rowid: the log is stored in position order.
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
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # The only secondary indexes: every index costs each append (measured in `make bench`);
    # "as of" reads scan in position order and filter on recorded_at.
    sa.UniqueConstraint("stream", "version", name="uq_events_stream_version"),
)

# One row (id = 1): the last position and hash. Appends lock it, which serialises writers
# without a sequence (sequences leave gaps, and readers would miss late commits).
log_head = sa.Table(
    "log_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("command_id", sa.String(200), primary_key=True),
    sa.Column("stream", sa.String(200), nullable=False),
    sa.Column("first_position", sa.BigInteger),
    sa.Column("last_position", sa.BigInteger),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    # SHA-256 of the request body that ran the command (NULL: none was given, or the row is
    # older than revision 0003): the same id with another digest is refused.
    sa.Column("request_digest", sa.String(64)),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("taken_at", UTCDateTime, nullable=False),
)

# A person's key, wrapped by a key-encryption key that is never in the database (shared/kek.py),
# and the id of that KEK: a copy of the database alone opens nothing.
person_keys = sa.Table(
    "person_keys",
    metadata,
    sa.Column("person_id", sa.String(100), primary_key=True),
    sa.Column("kek_id", sa.String(32), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("stream", sa.String(200), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("handled_at", UTCDateTime, nullable=False),
    sa.Index("ix_inbox_source_stream", "source", "stream", "position"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
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
    # parked: waiting for an operator; retrying: released by an operator, to be replayed by the
    # running service; retried / skipped: done.
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("parked_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime),
    sa.Index("ix_dead_letters_stream", "source", "stream", "status"),
    sa.Index("ix_dead_letters_event_id", "event_id"),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    # "relay", "relay.public", "projection:<name>" ...
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
