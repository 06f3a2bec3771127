"""Engines and sessions, and the one worker thread that runs every blocking database call.

Why a thread and not short synchronous calls on the loop (as JupyterHub does with its own ORM):
the queue writes on every submit, transition and log save, and reads whole job lists; on
PostgreSQL each is a network round trip, on SQLite a write may wait for JupyterHub's own
transaction (busy timeout). Any of those on the event loop would stall every user of the hub.
One worker serializes our writes, which keeps SQLite free of lock fights between our own
threads and gives every transition a total order.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool


def make_engine(url, **kwargs):
    """An engine for ``url``: SQLite gets foreign keys, WAL-friendly timeouts and, for
    ``:memory:``, one shared connection; other databases get pre-ping."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).update(check_same_thread=False, timeout=30)
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


class Database:
    """A session factory on ``url`` and ``await db.run(fn, *args)``: ``fn(session, *args)`` runs
    on the worker thread in a transaction, committed when it returns, rolled back if it raises."""

    def __init__(self, url, **engine_kwargs):
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="crater-db")

    def run_sync(self, fn, *args):
        with self.Session() as session, session.begin():
            return fn(session, *args)

    async def run(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_sync, fn, *args)

    async def call(self, fn, *args):
        """Run a plain blocking ``fn(*args)`` (no session) on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self):
        self._executor.shutdown(wait=True)
        self.engine.dispose()
