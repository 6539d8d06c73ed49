"""numbering epochs: a message's identity is (device, epoch, kind, seq)

Revision ID: 0002
Revises: 0001

Messages stored before it belong to the legacy epoch of schema-3 devices ("00000000").
"""

import warnings

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

LEGACY = "00000000"


def upgrade() -> None:
    with warnings.catch_warnings():
        # SQLite's copy of each table is made with the new key, which SQLAlchemy notes as
        # "not matching" the key it read from the old table: that is the change intended
        warnings.filterwarnings("ignore", message=r"Table '_alembic_tmp_\w+' specifies "
                                                  "columns .* as primary_key=True")
        _upgrade()


def _upgrade() -> None:
    for table, key in (("received", ["device_id", "epoch", "kind", "seq"]),
                       ("gaps", ["device_id", "epoch", "kind", "first_missing"]),
                       ("summaries", ["device_id", "epoch", "seq"])):
        with op.batch_alter_table(table, recreate="always") as batch_op:
            batch_op.add_column(sa.Column("epoch", sa.String(length=32), nullable=False,
                                          server_default=LEGACY))
            if op.get_bind().dialect.name != "sqlite":  # SQLite's copy takes the new key
                batch_op.drop_constraint(f"{table}_pkey", type_="primary")
            batch_op.create_primary_key(f"{table}_pkey", key)
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column("epoch", server_default=None)
    with op.batch_alter_table("devices") as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("epoch_since", sa.Float(), nullable=True))
