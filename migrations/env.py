"""The Alembic environment (DESIGN §5): the schema is made and changed only by these migrations.

It runs two ways. In-process, engine.storage.upgrade_schema (what `gridloop init-db` and `gridloop
demo` call) passes its own Connection in config.attributes["connection"], already in a transaction
that it commits. From the command line (`.venv/bin/alembic upgrade head`, `alembic revision
--autogenerate -m ...`, with alembic.ini at the repository root), it connects to
engine.storage.database_url(): GRIDLOOP_DATABASE_URL, or instance/gridloop.sqlite.

Both run the migrations through engine.storage.migration_connection: one transaction, and on
SQLite foreign keys off while they run (checked before the commit), or batch migrations that
copy a table referred to by others would fail.

render_as_batch: SQLite cannot ALTER most things, so operations inside batch_alter_table copy the
table there and ALTER in place on PostgreSQL. compare_type and compare_server_default:
autogenerate (and `alembic check`) also report changed types and server defaults, as
tests/test_migrations.py does. Types of engine.models (UTCDateTime) are written into a new
revision as the type the database stores (sa.DateTime()), so revisions never import the models.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import TypeDecorator, pool

from engine.models import Base
from engine.storage import database_url, make_engine, migration_connection

config = context.config
if config.config_file_name is not None:  # the command line: log as alembic.ini says
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata


def render_item(kind: str, obj, _autogen_context):
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False  # alembic's own rendering


OPTIONS = {
    "target_metadata": target_metadata,
    "render_as_batch": True,
    "compare_type": True,
    "compare_server_default": True,
    "render_item": render_item,
}


def run_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    context.configure(
        url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"}, **OPTIONS
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # in-process: the caller owns the connection and its transaction
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(database_url(), poolclass=pool.NullPool)
    try:
        with migration_connection(engine) as connection:  # as upgrade_schema runs them
            context.configure(connection=connection, **OPTIONS)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
