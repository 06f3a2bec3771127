"""Python's cyclic garbage collector paused while an admission cycle runs.

Why: a cycle over 10^5 queued jobs allocates some 10^5 short-lived tuples (heap entries,
placements, decisions). Each 700 allocations start a collection, and every few of those a pass
over all the process's long-lived objects — in a hub, its ORM rows, the watch caches and the
queued jobs themselves, 10^5 to 10^6 of them. Measured on the queue_cycle benchmark's input:
the collector took about a third of the cycle. What a cycle allocates holds no reference
cycles, so reference counting frees it all the same; the collector runs again as usual once the
cycle is over (and what it skipped is still collected then, if anything needs it).

Only the collector's automatic runs pause, for the length of one cycle or one completion of a
decision (tens to hundreds of milliseconds), and only if it was on: nested and concurrent uses
(the cycle on one worker thread, a decision completed on another) share one count, and the last
to leave turns it back on.
"""

import gc
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused():
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
