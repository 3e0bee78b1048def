"""The garbage collector's settings for a run.

A push allocates a few dozen short-lived objects per request (tasks, futures, answers, parsed states)
and keeps almost none of them. With CPython's defaults (a young collection every 700 allocations) the
collector ran every 17 requests or so; the requests in flight survived each time and, promoted, set off
full collections that walk every object the process holds: the plan's maps of users, and Prefect's,
polars' and pydantic's modules. That was about a tenth of the whole job's CPU (bench/RESULTS.md).

So a run's process collects young objects every ``YOUNG`` allocations, by which time nearly everything
allocated since the last collection is gone; and during a push the objects that exist before it are
frozen (left out of every collection: they live for the whole run anyway). Reference cycles are still
collected, only less often.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["YOUNG", "lean_collector", "push_heap"]

#: allocations between young collections (CPython's default is 700)
YOUNG = 20_000


def lean_collector() -> None:
    """Young collections every ``YOUNG`` allocations from now on, in this process."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


@contextlib.contextmanager
def push_heap() -> Iterator[None]:
    """Inside the block: what exists now is frozen, and young collections are lean. After it, the
    collector is as it was (the frozen objects join the oldest generation)."""
    before = gc.get_threshold()
    gc.freeze()
    lean_collector()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
