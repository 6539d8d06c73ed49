"""verdicts: clinicians confirm or correct the label of the audio behind alerts; the
stethoscope each device records with; the session of each clip

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('verdicts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('clip_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('model_label', sa.String(length=64), nullable=False),
    sa.Column('verdict', sa.String(length=20), nullable=False),
    sa.Column('by', sa.String(length=200), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.create_index('verdicts_clip', ['clip_id', 'at'], unique=False)
        batch_op.create_index('verdicts_device', ['device_id', 'at'], unique=False)
    with op.batch_alter_table('devices') as batch_op:
        batch_op.add_column(sa.Column('stethoscope', sa.String(length=200), nullable=True))
    with op.batch_alter_table('clips') as batch_op:
        batch_op.add_column(sa.Column('session_id', sa.String(length=64), nullable=True))
