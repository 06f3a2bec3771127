"""Run crater_hub's alembic migrations (``crater_hub/db/migrations``) against a database.

Our version table is ``crater_alembic_version``: JupyterHub's own alembic (``alembic_version``)
never sees our revisions, and ours never see its. ``upgrade`` is what the queue runs at hub
start; ``python -m crater_hub.db.migrate URL`` does the same by hand.
"""

import sys
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

VERSION_TABLE = "crater_alembic_version"
SCRIPTS = Path(__file__).with_name("migrations")
#: the queue and the image library each migrate at start, on their own worker threads
_upgrade_lock = threading.Lock()


def alembic_config(connection=None):
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine, revision="head"):
    """Bring the database of ``engine`` to ``revision`` (idempotent; one at a time per process)."""
    with _upgrade_lock, engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def current(engine):
    with engine.connect() as connection:
        return MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def head():
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


if __name__ == "__main__":
    from .session import make_engine

    upgrade(make_engine(sys.argv[1]))
    print(current(make_engine(sys.argv[1])))
