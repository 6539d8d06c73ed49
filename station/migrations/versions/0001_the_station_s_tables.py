"""the station's tables

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('alert_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=100), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('event', sa.String(length=20), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alert_log', schema=None) as batch_op:
        batch_op.create_index('alert_log_alert', ['alert_id', 'at'], unique=False)

    op.create_table('alerts',
    sa.Column('alert_id', sa.String(length=100), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('category', sa.String(length=20), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('opened_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('acked_by', sa.String(length=200), nullable=True),
    sa.Column('acked_at', sa.Float(), nullable=True),
    sa.Column('ack_note', sa.Text(), nullable=True),
    sa.Column('acked_version', sa.Integer(), nullable=True),
    sa.Column('resolved_by', sa.String(length=200), nullable=True),
    sa.Column('resolved_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('alert_id')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('alerts_device', ['device_id', 'opened_at'], unique=False)
        batch_op.create_index('alerts_state', ['state', 'priority'], unique=False)

    op.create_table('changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=True),
    sa.Column('what', sa.String(length=20), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('clips',
    sa.Column('clip_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('alert_id', sa.String(length=100), nullable=True),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('encoding', sa.String(length=8), nullable=False),
    sa.Column('sample_rate', sa.Integer(), nullable=False),
    sa.Column('audio', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('clip_id')
    )
    with op.batch_alter_table('clips', schema=None) as batch_op:
        batch_op.create_index('clips_alert', ['alert_id'], unique=False)
        batch_op.create_index('clips_device_start', ['device_id', 'start'], unique=False)

    op.create_table('cycles',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=True),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('quality', sa.Float(), nullable=False),
    sa.Column('probs', sa.JSON(), nullable=False),
    sa.Column('forced_cut', sa.Boolean(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.create_index('cycles_device_start', ['device_id', 'start'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('rule', sa.String(length=200), nullable=False),
    sa.Column('target', sa.String(length=20), nullable=False),
    sa.Column('alert_id', sa.String(length=100), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('event', sa.String(length=20), nullable=False),
    sa.Column('message', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('why', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('next_at', sa.Float(), nullable=True),
    sa.Column('done_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('deliveries_alert', ['alert_id'], unique=False)
        batch_op.create_index('deliveries_rule_device', ['rule', 'device_id', 'kind', 'created_at'], unique=False)
        batch_op.create_index('deliveries_state_next', ['state', 'next_at'], unique=False)

    op.create_table('delivery_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('delivery_attempts_delivery', ['delivery_id'], unique=False)

    op.create_table('devices',
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('first_seen', sa.Float(), nullable=False),
    sa.Column('last_seen', sa.Float(), nullable=False),
    sa.Column('status_at', sa.Float(), nullable=True),
    sa.Column('clock_synced', sa.Boolean(), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=True),
    sa.Column('spool_depth', sa.Integer(), nullable=True),
    sa.Column('stats', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('device_id')
    )
    op.create_table('gaps',
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('first_missing', sa.Integer(), nullable=False),
    sa.Column('last_missing', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'kind', 'first_missing')
    )
    op.create_table('invalid',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('topic', sa.String(length=300), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('excerpt', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('minutes',
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('minute', sa.Integer(), nullable=False),
    sa.Column('cycles', sa.Integer(), nullable=False),
    sa.Column('good', sa.Integer(), nullable=False),
    sa.Column('abnormal', sa.Integer(), nullable=False),
    sa.Column('quality_sum', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'minute')
    )
    op.create_table('received',
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('sent', sa.Float(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'kind', 'seq')
    )
    with op.batch_alter_table('received', schema=None) as batch_op:
        batch_op.create_index('received_at', ['at'], unique=False)

    op.create_table('routing_state',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('summaries',
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('start', sa.Float(), nullable=False),
    sa.Column('end', sa.Float(), nullable=False),
    sa.Column('cycles', sa.Integer(), nullable=False),
    sa.Column('cycles_by_label', sa.JSON(), nullable=False),
    sa.Column('abnormal_burden', sa.Float(), nullable=False),
    sa.Column('poor_quality_fraction', sa.Float(), nullable=False),
    sa.Column('record_label', sa.String(length=40), nullable=False),
    sa.Column('breathing_rate_per_min', sa.Float(), nullable=True),
    sa.Column('ended_by', sa.String(length=20), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'seq')
    )
    with op.batch_alter_table('summaries', schema=None) as batch_op:
        batch_op.create_index('summaries_device_end', ['device_id', 'end'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('summaries', schema=None) as batch_op:
        batch_op.drop_index('summaries_device_end')

    op.drop_table('summaries')
    op.drop_table('routing_state')
    with op.batch_alter_table('received', schema=None) as batch_op:
        batch_op.drop_index('received_at')

    op.drop_table('received')
    op.drop_table('minutes')
    op.drop_table('invalid')
    op.drop_table('gaps')
    op.drop_table('devices')
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('delivery_attempts_delivery')

    op.drop_table('delivery_attempts')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('deliveries_state_next')
        batch_op.drop_index('deliveries_rule_device')
        batch_op.drop_index('deliveries_alert')

    op.drop_table('deliveries')
    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.drop_index('cycles_device_start')

    op.drop_table('cycles')
    with op.batch_alter_table('clips', schema=None) as batch_op:
        batch_op.drop_index('clips_device_start')
        batch_op.drop_index('clips_alert')

    op.drop_table('clips')
    op.drop_table('changes')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('alerts_state')
        batch_op.drop_index('alerts_device')

    op.drop_table('alerts')
    with op.batch_alter_table('alert_log', schema=None) as batch_op:
        batch_op.drop_index('alert_log_alert')

    op.drop_table('alert_log')

