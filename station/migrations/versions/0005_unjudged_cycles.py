"""unjudged cycles: a session summary counts the cycles the device could not judge, by why
(a band-limited stethoscope, clipping, noise, a poor cycle; device schema 6)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('summaries') as batch_op:
        batch_op.add_column(sa.Column('cycles_unjudged', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('summaries') as batch_op:
        batch_op.drop_column('cycles_unjudged')
