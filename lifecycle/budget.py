"""The run's request budget, shared by the shards of a sharded run and re-divided as they finish.

The hard rule: all shards together never exceed the run's ``rate`` in any window at the server,
whatever the number of workers. Each shard has its own client and limiter, so the rate is divided,
never multiplied: a shard's share is ``rate / min(workers, shards not finished)``. Shards only
finish, so shares only grow, and a share grows only once the finished shards' last requests have
left the window (``increase_delay``).

Two more things keep the sum within the rate. A shard's limiter starts at the smallest share
(``first_share``) and grows from there like any other. And a shard attempt that may run on the slot
of one that ended a moment ago (every start after the first ``min(workers, shards)``, retries
included) sends nothing for one window, so that its burst does not meet its predecessor's in one
window (``holds_start``). Both rest on at most ``workers`` shards running at once: a Dask cluster
of ``workers`` single-thread workers, or sequential shards with ``workers=1``.

The counters live in a ``CountStore``: ``LocalStore`` in one process, ``DaskStore`` on a Dask
scheduler for shards in worker processes. Dask is imported only inside ``DaskStore``, so this module
imports without it. No Prefect here: the flows pass in what they know.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar

from frigade.limiter import SlidingWindowLimiter

__all__ = [
    "CountStore",
    "Counter",
    "DaskStore",
    "LocalStore",
    "ShardBudget",
    "first_share",
    "holds_start",
    "increase_delay",
    "share",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``started`` counts shard attempts (retries too), ``finished`` the shards whose last request was
#: answered, ``stopped`` the stops (one is enough for every shard of the run to stop sending),
#: ``throttled`` the rate cuts a throttling answer caused in any shard (every shard cuts too)
Counter = Literal["started", "finished", "stopped", "throttled"]
COUNTERS: tuple[Counter, ...] = ("started", "finished", "stopped", "throttled")


def share(rate: float, workers: int, shards: int, finished: int) -> float:
    """One shard's share of ``rate`` once ``finished`` shards are done: at most ``workers`` shards run
    at once, and no more than are left. The shard asking is itself unfinished, so never less than one
    is left (a stale or repeated count cannot divide by zero or go negative)."""
    _check(rate, workers, shards)
    left = max(1, shards - max(0, finished))
    return rate / min(workers, left)


def first_share(rate: float, workers: int, shards: int) -> float:
    """The share a shard starts with, whatever has finished: a count seen at the start is no more
    trustworthy than one seen later, so it too waits ``increase_delay`` before it counts."""
    return share(rate, workers, shards, 0)


def increase_delay(window: float, poll_s: float) -> float:
    """How long after a poller first saw a larger finished count the larger share may apply: by then
    the finished shards' last requests (answered before the count grew) are out of the window. The
    poll interval is added on top as slack."""
    return window + poll_s


def holds_start(start: int, workers: int, shards: int) -> bool:
    """Whether the ``start``-th shard attempt (1-based, from the ``started`` counter) must send nothing
    for one window. The first ``min(workers, shards)`` starts each have a slot nobody used before;
    any later one may follow a shard (or its own failed attempt) whose requests are still in the
    window, and a fresh limiter would let its whole share go at once on top of them."""
    return start > min(workers, shards)


def _check(rate: float, workers: int, shards: int) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards!r}")


class CountStore(Protocol):
    """Counters shared by the shards of one run. ``add`` is atomic across every process of the run."""

    #: True when the calls wait on the network: ``ShardBudget.follow`` then makes them in a thread,
    #: so that the push's event loop keeps running
    blocking: bool

    def add(self, counter: Counter) -> int:
        """Add one to ``counter``; returns the new count."""
        ...

    def get(self, counter: Counter) -> int:
        """The count now (0 before the first ``add``)."""
        ...


class LocalStore:
    """In-process counters: sequential shards, or shards in threads of one process, and tests."""

    blocking = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, counter: Counter) -> int:
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0) + 1
            return self._counts[counter]

    def get(self, counter: Counter) -> int:
        with self._lock:
            return self._counts.get(counter, 0)


class DaskStore:
    """Counters on a Dask scheduler, one ``distributed.Variable`` per counter, incremented under a
    ``distributed.Lock``, all named after ``name`` (one name per run, so runs sharing a scheduler do
    not mix). The first store of a run to connect sets the counters to 0 (a flag in the scheduler's
    metadata says it is done).

    Only ``name`` and ``address`` are pickled: a copy sent to a worker reconnects there, through the
    worker's own client (``distributed.get_client()``, which works in a task that prefect-dask runs,
    from its thread and from threads it starts). Outside a worker, the default client of the process
    is used if any, else a client of its own to ``address`` (closed by ``close``).
    """

    blocking = True

    def __init__(self, name: str, *, address: str | None = None, timeout_s: float = 30.0) -> None:
        if not name:
            raise ValueError("a DaskStore needs the run's name")
        self.name = name
        self.address = address
        self.timeout_s = timeout_s
        self._setup()

    def _setup(self) -> None:
        self._guard = threading.Lock()
        self._client: Any = None
        self._own_client = False
        self._lock: Any = None
        self._variables: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "timeout_s": self.timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self.address = state["address"]
        self.timeout_s = state["timeout_s"]
        self._setup()

    def _connect(self) -> None:
        # called with self._guard held
        if self._client is not None:
            return
        import distributed

        try:
            client = distributed.get_client(timeout=self.timeout_s)
        except ValueError:
            if self.address is None:
                raise RuntimeError(
                    f"DaskStore {self.name!r}: not in a Dask worker, no default client and no address"
                ) from None
            client = distributed.Client(  # type: ignore[no-untyped-call]
                self.address, timeout=self.timeout_s, set_as_default=False
            )
            self._own_client = True
        self._client = client
        self._lock = distributed.Lock(  # type: ignore[no-untyped-call]
            f"{self.name}/lock", scheduler_rpc=client.scheduler, loop=client.loop
        )
        for counter in COUNTERS:
            self._variables[counter] = distributed.Variable(  # type: ignore[no-untyped-call]
                f"{self.name}/{counter}", client=client
            )
        # a Variable never set makes get() wait, and one that times out logs a traceback on the
        # scheduler's console: the first store of the run sets them to 0, marked in the scheduler's
        # metadata (which has a default) so that later stores need no lock to know
        ready = [self.name, "ready"]
        if not client.get_metadata(ready, default=False):  # type: ignore[no-untyped-call]
            self._locked(lambda: self._init(ready))

    def _init(self, ready: list[str]) -> None:
        if not self._client.get_metadata(ready, default=False):
            for variable in self._variables.values():
                variable.set(0)
            self._client.set_metadata(ready, True)

    def _locked(self, action: Callable[[], T]) -> T:
        if not self._lock.acquire(timeout=self.timeout_s):
            raise TimeoutError(f"DaskStore {self.name!r}: no lock within {self.timeout_s} s")
        try:
            return action()
        finally:
            self._lock.release()

    def _read(self, counter: Counter) -> int:
        return int(self._variables[counter].get(timeout=self.timeout_s))

    def add(self, counter: Counter) -> int:
        with self._guard:
            self._connect()
            return self._locked(lambda: self._increment(counter))

    def _increment(self, counter: Counter) -> int:
        count = self._read(counter) + 1
        self._variables[counter].set(count)
        return count

    def get(self, counter: Counter) -> int:
        with self._guard:
            self._connect()
            return self._read(counter)

    def close(self) -> None:
        """Close the client this store opened itself (none in a worker); the counters stay."""
        with self._guard:
            if self._own_client and self._client is not None:
                self._client.close()
            self._setup()


class ShardBudget:
    """One shard's view of the run's budget: ``rate`` requests per second for the whole run, at most
    ``workers`` shards at once, ``shards`` in all, counted in ``store``.

    The API's throttle is the account's, not a shard's: a shard whose limiter cut its rate for a
    throttling answer counts it in ``throttled``, and every other shard cuts its own rate when it
    sees the count grow (at the next poll), so the whole run backs off together and climbs back
    together (``frigade.limiter``'s cut and additive recovery).

    A shard runs ``following(limiter)`` (or ``follow``) around its push and calls ``finished()`` once
    its push has ended with every request answered. A shard that failed is never counted as finished:
    the others then keep their smaller share, which is safe.
    """

    def __init__(self, rate: float, workers: int, shards: int, store: CountStore) -> None:
        _check(rate, workers, shards)
        self.rate = rate
        self.workers = workers
        self.shards = shards
        self.store = store

    def share(self) -> float:
        """The share the finished count allows now (what ``follow`` moves to, after the delay)."""
        return share(self.rate, self.workers, self.shards, self.store.get("finished"))

    def finished(self) -> int:
        """Count this shard as finished (after its last answer); returns the finished count. It blocks
        on a ``DaskStore`` for a round trip to the scheduler."""
        return self.store.add("finished")

    async def _call(self, method: Callable[[Counter], int], counter: Counter) -> int:
        if self.store.blocking:
            return await asyncio.to_thread(method, counter)
        return method(counter)

    async def follow(
        self,
        limiter: SlidingWindowLimiter,
        *,
        poll_s: float = 0.25,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Count this attempt as started, set ``limiter`` to the first share (holding it one window
        when ``holds_start``), then poll the finished count every ``poll_s`` and raise the limiter's
        rate ``increase_delay`` after each larger count is first seen. Runs until cancelled.

        Times are the limiter's clock (local and monotonic: no timestamps cross machines)."""
        delay = await self._begin(limiter, poll_s)
        await self._poll(limiter, poll_s, delay, sleep)

    @contextlib.asynccontextmanager
    async def following(self, limiter: SlidingWindowLimiter, *, poll_s: float = 0.25) -> AsyncIterator[None]:
        """``follow`` for the duration of the block, the polling in a task. The start (counting the
        attempt, the first share, the hold) is done before the block, and its failure is raised: the
        push must not run at a share never set. If the polling fails later (the scheduler went away),
        the limiter keeps the share it had, which is safe, and the failure is logged."""
        delay = await self._begin(limiter, poll_s)
        task = asyncio.create_task(self._poll_logged(limiter, poll_s, delay))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _begin(self, limiter: SlidingWindowLimiter, poll_s: float) -> float:
        if not (math.isfinite(poll_s) and poll_s > 0):
            raise ValueError(f"poll_s must be a positive number, got {poll_s!r}")
        start = await self._call(self.store.add, "started")
        limiter.set_rate(first_share(self.rate, self.workers, self.shards))
        # the first share has the longest window the limiter will have (shares only grow)
        delay = increase_delay(limiter.window, poll_s)
        if holds_start(start, self.workers, self.shards):
            limiter.pause_for(delay)
        return delay

    async def _poll(
        self,
        limiter: SlidingWindowLimiter,
        poll_s: float,
        delay: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        current = first_share(self.rate, self.workers, self.shards)
        pending: deque[tuple[float, float]] = deque()  # (due, share), both increasing
        reported = limiter.own_cuts  # this shard's cuts told to the store (or made before it followed)
        added = 0  # of which counted there by this poller
        others = await self._call(self.store.get, "throttled")  # the other shards' cuts already seen
        while True:
            while reported < limiter.own_cuts:
                await self._call(self.store.add, "throttled")
                reported += 1
                added += 1
            theirs = await self._call(self.store.get, "throttled") - added
            if theirs > others:
                others = theirs
                limiter.cut()
            finished = await self._call(self.store.get, "finished")
            seen_at = limiter.now()  # after the read: the later, the safer
            target = share(self.rate, self.workers, self.shards, finished)
            if target > (pending[-1][1] if pending else current):
                pending.append((seen_at + delay, target))
            due = current
            while pending and pending[0][0] <= seen_at:
                due = pending.popleft()[1]
            if due > current:
                current = due
                limiter.set_rate(current)
            wait = poll_s if not pending else min(poll_s, pending[0][0] - seen_at)
            await sleep(max(0.0, wait))

    async def _poll_logged(self, limiter: SlidingWindowLimiter, poll_s: float, delay: float) -> None:
        try:
            await self._poll(limiter, poll_s, delay)
        except Exception:
            log.warning("the shard budget stopped following the run's finished count", exc_info=True)
