"""Person keys wrapped by a key-encryption key from configuration (shared/kek.py): the raw `key`
column becomes `wrapped_key` beside `kek_id`, and every key already stored is wrapped here, once,
with the KEK configured for the run (LAVORO_KEK_FILE / LAVORO_KEK). A database with person keys
and no KEK configured is not upgraded: the error says what to set. Events are not touched.

Revision ID: 0002_wrapped_person_keys
Revises: 0001_chassis
"""

import sqlalchemy as sa
from alembic import context, op

from shared.kek import KekConfigError, Keyring

revision = "0002_wrapped_person_keys"
down_revision = "0001_chassis"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("person_keys", sa.Column("kek_id", sa.String(32)))
    op.add_column("person_keys", sa.Column("wrapped_key", sa.LargeBinary))
    rows = bind.execute(sa.text("SELECT person_id, key FROM person_keys")).all()
    if rows:
        keyring = context.config.attributes.get("keyring") or Keyring.from_config()
        if keyring.current is None:
            raise KekConfigError(
                f"person_keys holds {len(rows)} key(s) to wrap: set LAVORO_KEK_FILE (a file "
                "holding the key-encryption key) or LAVORO_KEK, then upgrade again"
            )
        update = sa.text(
            "UPDATE person_keys SET kek_id = :kek_id, wrapped_key = :wrapped "
            "WHERE person_id = :person_id"
        ).bindparams(sa.bindparam("wrapped", type_=sa.LargeBinary))
        for person_id, key in rows:
            kek_id, wrapped = keyring.wrap(person_id, bytes(key))
            bind.execute(update, {"kek_id": kek_id, "wrapped": wrapped, "person_id": person_id})
    # SQLite cannot drop a column or make one NOT NULL in place: batch mode copies the table.
    with op.batch_alter_table("person_keys") as batch:
        batch.drop_column("key")
        batch.alter_column("kek_id", existing_type=sa.String(32), nullable=False)
        batch.alter_column("wrapped_key", existing_type=sa.LargeBinary, nullable=False)


def downgrade() -> None:
    raise NotImplementedError("unwrapped keys are never written back")
