"""crater_hub's own tables (``crater_*``) in the hub's database, with alembic migrations of our
own (version table ``crater_alembic_version``, so they coexist with JupyterHub's ``alembic_version``).

``models`` declares the tables, ``session.Database`` runs blocking SQLAlchemy work on one
worker thread (never on the hub's event loop), ``migrate.upgrade`` brings a database to head.
"""
