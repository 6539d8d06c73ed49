"""device status schema 7: which model package exactly a device runs (its manifest's
sha256) and how it came to run it (installed, rolled back and why)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices') as batch_op:
        batch_op.add_column(sa.Column('model_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('model_note', sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('devices') as batch_op:
        batch_op.drop_column('model_note')
        batch_op.drop_column('model_sha256')
