"""The garbage collector's and the allocator's settings for a run.

A push allocates a few dozen short-lived objects per request (tasks, futures, answers, parsed states)
and keeps almost none of them. With CPython's defaults (a young collection every 700 allocations) the
collector ran every 17 requests or so; the requests in flight survived each time and, promoted, set off
full collections that walk every object the process holds: the plan's maps of users, and Prefect's,
polars' and pydantic's modules. That was about a tenth of the whole job's CPU (bench/RESULTS.md).

So a run's process collects young objects every ``YOUNG`` allocations, by which time nearly everything
allocated since the last collection is gone; and during a push the objects that exist before it are
frozen (left out of every collection: they live for the whole run anyway). Reference cycles are still
collected, only less often.

polars allocates with jemalloc, which keeps the pages a frame freed for a while, and gives them back
only when it next allocates. A run's phases follow one another faster, and a push hardly allocates
with polars, so the memory each phase freed stayed in the process under the next: what planning
20,000 users freed was still there while their finish ran, and the job's peak grew with its users
(bench/RESULTS.md, push_memory). A run's process has a jemalloc thread of its own give freed pages back
within ``DECAY_MS`` (``return_freed_pages``). Giving them back at once instead cost a third more time
planning a 5M-row export; a twentieth of a second cost none that could be measured.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

__all__ = [
    "DECAY_MS",
    "JEMALLOC_ENV",
    "JEMALLOC_SETTINGS",
    "YOUNG",
    "lean_collector",
    "push_heap",
    "return_freed_pages",
]

#: where polars' jemalloc reads its settings, once, when polars is loaded
JEMALLOC_ENV = "_RJEM_MALLOC_CONF"
#: how long freed pages are kept for reuse before they go back to the system
DECAY_MS = 50
#: freed pages back to the system after ``DECAY_MS``, by a thread of the allocator's own (polars'
#: settings keep them 0.5 s, then 1 s more, and only give them back when it next allocates)
JEMALLOC_SETTINGS = f"background_thread:true,dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:0"


def return_freed_pages() -> None:
    """Has polars' allocator give freed pages back within ``DECAY_MS``. Only a process that has not
    loaded polars yet takes it: the console command and a flow run's process do this on import of
    their package (``cli``, ``flows``), before anything loads polars. The settings go last, where
    jemalloc lets them win: polars writes its own (pages kept half a second) into the environment
    when it loads, so a child of any process that loaded polars inherits them."""
    current = os.environ.get(JEMALLOC_ENV, "")
    if not current.endswith(JEMALLOC_SETTINGS):
        os.environ[JEMALLOC_ENV] = f"{current},{JEMALLOC_SETTINGS}" if current else JEMALLOC_SETTINGS


#: allocations between young collections (CPython's default is 700)
YOUNG = 20_000

_lock = threading.Lock()
#: pushes inside ``push_heap`` now, in this process, and the collector's thresholds before the first
_pushes = 0
_before: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def lean_collector() -> Iterator[None]:
    """Young collections every ``YOUNG`` allocations inside the block, as before after it."""
    before = gc.get_threshold()
    gc.set_threshold(YOUNG, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextlib.contextmanager
def push_heap() -> Iterator[None]:
    """Inside the block: what exists now is frozen, and young collections are lean. The collector is
    global to the process, so pushes that overlap (threads of one Dask worker) share one such period:
    the first to begin starts it, the last to end restores the collector (the frozen objects join the
    oldest generation)."""
    global _pushes, _before
    with _lock:
        if _pushes == 0:
            _before = gc.get_threshold()
            gc.collect()  # what planning left behind is not kept for the whole push
            gc.freeze()
            gc.set_threshold(YOUNG, *_before[1:])
        _pushes += 1
    try:
        yield
    finally:
        with _lock:
            _pushes -= 1
            if _pushes == 0:
                gc.set_threshold(*_before)
                gc.unfreeze()
