"""Commands remember the digest of the request that ran them: an HTTP command id is scoped to its
actor and endpoint (shared/web.py), and the same id with another body is refused (422) instead
of answering with the first command's events.

Rows written before this revision keep NULL: with nothing to compare, their id alone decides, as
it always did. Nothing else changes; the log is untouched.

Revision ID: 0003_request_digest
Revises: 0002_wrapped_person_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_request_digest"
down_revision = "0002_wrapped_person_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("request_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the event log's tables are never dropped by a migration")
