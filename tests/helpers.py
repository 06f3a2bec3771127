"""Waiting on conditions with a deadline: the only way tests here wait."""

import asyncio
import inspect
import time


async def wait_for(predicate, timeout=10.0, interval=0.02, message=None):
    """Poll ``predicate`` (sync or async) until it returns a truthy value; return that value.

    Raises AssertionError naming ``message`` (or the predicate) when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate!r} (last: {last!r})")
        await asyncio.sleep(interval)
