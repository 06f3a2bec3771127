"""alembic environment for crater_hub's tables; run through :mod:`crater_hub.db.migrate`."""

from alembic import context

from crater_hub.db import usage_models  # noqa: F401  (its tables join Base.metadata)
from crater_hub.db.migrate import VERSION_TABLE
from crater_hub.db.models import Base


def include_object(obj, name, type_, reflected, compare_to):
    # the hub's database holds JupyterHub's tables too: only ours are ours to migrate
    return type_ != "table" or name.startswith("crater_")


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run crater_hub migrations through crater_hub.db.migrate.upgrade(engine)")
context.configure(connection=connection, target_metadata=Base.metadata,
                  version_table=VERSION_TABLE, include_object=include_object,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
