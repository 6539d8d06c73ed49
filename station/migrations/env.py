"""Alembic's environment for the station's database: run by `station.store.migrate()` on the
connection it opened (`config.attributes["connection"]`), or by the `alembic` command with
`-x url=…` (to write a new revision: `alembic -c station/migrations/alembic.ini revision
--autogenerate -m …`)."""

from alembic import context

from station.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    from sqlalchemy import create_engine

    engine = create_engine(context.get_x_argument(as_dictionary=True)["url"])
    connection = engine.connect()
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
