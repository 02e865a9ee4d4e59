"""Alembic environment of Herald: online only, on a connection handed over by the caller.

Run migrations through :func:`herald.storage.migrate.upgrade`, which opens the transaction,
takes the cross-node lock and passes its connection in ``config.attributes["connection"]``.
There is no ``alembic.ini`` and no ``logging.config.fileConfig``: Alembic must not
reconfigure the application's logging.
"""

from __future__ import annotations

from alembic import context

from herald.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "Herald migrations run online only, through herald.storage.migrate.upgrade()"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode recreates the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
