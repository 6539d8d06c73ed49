"""device schema 6: a session summary counts the cycles the device could not judge, by why
(a band-limited stethoscope, clipping, noise, a poor cycle); statuses ordered by their
connection (its time, and whether the status is its last will), the device's heartbeat and the
pause that ends a stretch of its breathing;
an alert changes version (needs someone again) only when it escalates, from the fraction it
escalated at; a clip keeps the stethoscope it was recorded with

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
    with op.batch_alter_table('devices') as batch_op:
        batch_op.add_column(sa.Column('status_connected_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('status_will', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('breathing_pause_s', sa.Float(), nullable=True))
    with op.batch_alter_table('alerts') as batch_op:
        batch_op.add_column(sa.Column('escalated_fraction', sa.Float(), nullable=True))
    with op.batch_alter_table('clips') as batch_op:
        batch_op.add_column(sa.Column('stethoscope', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clips') as batch_op:
        batch_op.drop_column('stethoscope')
    with op.batch_alter_table('alerts') as batch_op:
        batch_op.drop_column('escalated_fraction')
    with op.batch_alter_table('devices') as batch_op:
        batch_op.drop_column('breathing_pause_s')
        batch_op.drop_column('heartbeat_s')
        batch_op.drop_column('status_will')
        batch_op.drop_column('status_connected_at')
    with op.batch_alter_table('summaries') as batch_op:
        batch_op.drop_column('cycles_unjudged')
