"""A strict sliding-window rate limiter shared by every request of a run."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["AdaptiveConcurrency", "SettlingLimiter", "SlidingWindowLimiter"]

#: what a throttling answer (a 429 that is not the MAU cap, a 503 with Retry-After) leaves of the rate:
#: this share of what the server accepted over the last window. Close to 1, because the accepted
#: count is already the server's limit: the cut only has to step below it, not halve a guess.
THROTTLE_CUT = 0.9
#: the shortest wait: asyncio fires a timer due within its clock's resolution (1 ns) without moving
#: its clock, so a shorter wait (a float rounding of a window's end) would re-check at the same
#: instant for ever on a clock that only moves when waited on (the tests' virtual time)
_MIN_WAIT = 2e-9
#: how fast the rate climbs back after a cut, per second, as a share of the rate it is capped at
#: (at least one request per second per second)
RECOVERY_PER_S = 0.02


class _Queue:
    """Waiters in the order they are served: by priority, highest first, and by arrival among equals.

    A push gives each request the number of requests its user still has to send: a user's requests
    go one after the other, so a long one served first keeps the rate up to the end, where served in
    arrival order it would trail alone after everyone else had finished.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    def __bool__(self) -> bool:
        return bool(self._heap)

    def join(self, priority: int) -> asyncio.Future[None]:
        """A waiter's place in the queue: its future is set when it is served."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (-priority, next(self._arrivals), waiter))
        return waiter

    def serve(self) -> bool:
        """Serve the next waiter; False when none is left. A cancelled waiter stays in the heap until
        its turn comes up, and is passed over then."""
        while self._heap:
            waiter = heapq.heappop(self._heap)[2]
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False


class _Turns:
    """A lock whose waiters take their turn in a ``_Queue``'s order; a newcomer never takes it ahead
    of a waiter."""

    def __init__(self) -> None:
        self._held = False
        self._waiters = _Queue()

    @contextlib.asynccontextmanager
    async def hold(self, priority: int = 0) -> AsyncIterator[None]:
        # the lock is held whenever anyone waits (``release`` hands it straight on), so a free lock
        # means nobody is ahead
        if self._held:
            turn = self._waiters.join(priority)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # handed the lock as it was cancelled: pass it on
                raise
        self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._held = self._waiters.serve()


def _limit_and_window(rate: float, window: float) -> tuple[int, float]:
    """``floor(rate * window)`` grants per ``window``, or one per ``1 / rate`` when that is below one."""
    # the epsilon keeps e.g. 29 * 0.1 = 2.9000000000000004 -> 2 from flooring a true 3 down to 2
    limit = math.floor(rate * window + 1e-9)
    if limit < 1:
        return 1, 1.0 / rate
    return limit, window


class SlidingWindowLimiter:
    """At most ``limit = floor(rate * window)`` grants in any ``window`` seconds, to waiters by
    priority, then in arrival order.

    A sliding log of the grant times still in the window: the next grant waits until the
    ``limit``-th newest of them is ``window * (1 + margin)`` old. There is no burst allowance beyond
    ``limit``. The margin absorbs the scheduling jitter between a grant and the request reaching the
    server, at a throughput cost of ``margin`` (1 % by default).

    When ``rate * window < 1`` the window is stretched to ``1 / rate`` with a limit of one.
    ``set_rate`` changes the rate while senders wait (a sharded run's budget is re-divided as shards
    finish). The limiter belongs to the event loop that first waits on it.
    """

    def __init__(
        self,
        rate: float,
        window: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin: float = 0.01,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"window must be a positive number, got {window!r}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        self._base_window = window
        self._margin = margin
        self._limit, self._window = _limit_and_window(rate, window)
        #: the rate asked for (``set_rate``), which a throttling answer cuts and time restores
        self._ceiling = rate
        self._rate = rate
        #: the rate the last cut left and when (None: no cut in force, the rate is the ceiling)
        self._cut: tuple[float, float] | None = None
        self._cut_at = -math.inf
        self._accepted: deque[float] = deque()
        self.cuts = 0
        #: throttling answers this limiter cut its rate for (``throttled``), not the cuts others asked
        #: for (``cut``): what a sharded run's budget tells the other shards
        self.own_cuts = 0
        self._spacing = self._window * (1.0 + margin)
        self._clock = clock
        self._sleep = sleep
        # unbounded: after set_rate lowers the limit, the grants beyond the new limit still count
        self._grants: deque[float] = deque()
        self._paused_until = -math.inf
        self._turns = _Turns()
        #: set when the rate changes (and, in SettlingLimiter, when a request settles), so that a
        #: waiter asleep for the old limit re-checks at once
        self._changed = asyncio.Event()

    @property
    def limit(self) -> int:
        """Grants allowed in any one window."""
        return self._limit

    @property
    def window(self) -> float:
        return self._window

    @property
    def rate(self) -> float:
        """The rate in force: the one asked for, or less after a throttling answer (``throttled``)."""
        self._recover(self._clock())
        return self._rate

    @property
    def ceiling(self) -> float:
        """The rate asked for (the constructor's, or the last ``set_rate``): never exceeded."""
        return self._ceiling

    def now(self) -> float:
        """The limiter's clock, the time base of ``pause_until``."""
        return self._clock()

    def pause_until(self, t: float) -> None:
        """Grant nothing before ``t`` (limiter clock); used for a server's Retry-After so that every
        sender waits, not only the one that was told."""
        self._paused_until = max(self._paused_until, t)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + max(0.0, seconds))

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on, as ``rate`` would have been given to the constructor (same
        window, margin and stretching below one grant per window).

        A sharded run re-divides its budget while shards wait on their limiters. A raise wakes the
        waiter, which re-checks against the new limit at once. A lowering never revokes a grant: the
        grants already made keep counting for their window, so the next grant waits until fewer than
        the new limit remain in it.
        """
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        self._ceiling = rate
        self._recover(self._clock())
        self._apply(rate if self._cut is None else min(rate, self._rate))

    def _apply(self, rate: float) -> None:
        self._rate = rate
        limit, window = _limit_and_window(rate, self._base_window)
        if (limit, window) == (self._limit, self._window):
            return
        self._limit, self._window = limit, window
        self._spacing = window * (1.0 + self._margin)
        self._changed.set()

    # -- throttling answers: a multiplicative cut, an additive climb back (AIMD) ---------------

    def answered(self, at: float) -> None:
        """A request was answered at ``at`` (limiter clock) without being throttled: the accepted
        count of the last window is what the next cut is taken from."""
        accepted = self._accepted
        accepted.append(at)
        horizon = at - self._base_window
        while accepted[0] <= horizon:
            accepted.popleft()

    def throttled(self, sent: float) -> bool:
        """The request granted at ``sent`` drew a throttling answer: cut the rate to ``THROTTLE_CUT``
        of what the server accepted over the last window (of the rate in force when it accepted
        more). Answers to requests sent before the last cut say nothing new and are ignored, so one
        burst of 429s is one cut. Returns whether the rate was cut."""
        if sent < self._cut_at:
            return False
        self._cut_now(self._clock())
        self.own_cuts += 1
        return True

    def cut(self) -> bool:
        """Another sender of the run (a shard) was throttled: the API's limit is the whole run's,
        so cut here too, unless a cut within the last window already answered the same burst."""
        now = self._clock()
        if now - self._cut_at < self._base_window:
            return False
        self._cut_now(now)
        return True

    def _cut_now(self, now: float) -> None:
        self._recover(now)
        horizon = now - self._base_window
        while self._accepted and self._accepted[0] <= horizon:
            self._accepted.popleft()
        seen = len(self._accepted) / self._base_window
        base = min(self._rate, seen) if seen > 0 else self._rate
        # never to nothing: one request per ten windows still learns when the server recovers
        rate = max(THROTTLE_CUT * base, 0.1 / self._base_window)
        self._cut = (now, rate)
        self._cut_at = now
        self.cuts += 1
        self._apply(min(rate, self._ceiling))

    def _recover(self, now: float) -> None:
        """The additive climb since the last cut, back to the ceiling."""
        if self._cut is None:
            return
        at, rate = self._cut
        climbed = rate + max(1.0, RECOVERY_PER_S * self._ceiling) * (now - at)
        if climbed >= self._ceiling:
            self._cut = None
            self._apply(self._ceiling)
        elif self._limit_and_window_differ(climbed):
            self._apply(climbed)
        else:
            self._rate = climbed

    def _limit_and_window_differ(self, rate: float) -> bool:
        return _limit_and_window(rate, self._base_window) != (self._limit, self._window)

    def _drop_old_grants(self, now: float) -> None:
        # by age rather than by count: once the limit can shrink, the grants beyond the new limit that
        # are still in the window must keep counting
        while self._grants and self._grants[0] + self._spacing <= now:
            self._grants.popleft()

    def _next_allowed(self) -> float:
        if len(self._grants) < self._limit:
            return self._paused_until
        # the grant `limit` places back from the newest must leave the window before the next one
        return max(self._paused_until, self._grants[-self._limit] + self._spacing)

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a grant; of the waiters, the one of the highest ``priority`` that came first is
        served next. Cancelling a waiter takes no grant and keeps the others' order."""
        # holding the turn across the wait is what orders the waiters: no newcomer barges in
        async with self._turns.hold(priority):
            while True:
                now = self._clock()
                self._recover(now)
                self._drop_old_grants(now)
                # re-read after every sleep: a pause or a new rate may have arrived, and sleeps can end
                # a little early
                ready_at = self._next_allowed()
                if now >= ready_at:
                    self._grants.append(now)
                    return
                await self._wait(max(_MIN_WAIT, ready_at - now))

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the rate changes meanwhile."""
        self._changed.clear()
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait((sleeper, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()


class SettlingLimiter(SlidingWindowLimiter):
    """At most ``limit`` requests counted in any window, where a request counts from its grant until
    its answer, and after that from a stamp never earlier than its arrival at the server.

    A limiter that counts grants alone is not enough: the server counts arrivals, which come later by
    a variable delay (event-loop lag, a new connection), so two grants a window apart can arrive
    within one window and draw 429s. Arrival lies between the grant and the answer; the stamp is the
    answer's time less the smallest round trip seen (less a little slack), a point no earlier than the
    arrival of any request whose trip back took at least that long.

    That rests on the fastest round trip being mostly the way back: the server's time and the answer's
    trip. Where its way out (grant to arrival) was longer than the slack, stamps come that much early.
    A run's first round trips are all such: every connection is new, and a loaded server takes them
    late. Measured on a loaded machine at 300 ms: after 368 answers, all in the first second, the
    smallest round trip was still 348 ms where the server's own time was 301 ms, so stamps came up to
    42 ms before arrivals (501 in the server's busiest second at a limit of 500); from the third
    second on it was 303 ms and no stamp came early. So the stamp is the answer's time itself until
    ``trust_after`` answers have been seen and ``trust_after_s`` (two windows by default) have passed
    since the first. Over a network whose delay is split both ways, the stamp falls near the grant,
    and the count is of grants plus the requests in flight. A request that got no answer (an error) is
    stamped when it is settled. Callers must ``settle`` every grant, or the limiter runs dry.
    """

    def __init__(
        self,
        rate: float,
        window: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        trust_after: int = 200,
        trust_after_s: float | None = None,
        slack_s: float = 0.005,
    ) -> None:
        super().__init__(rate, window, clock=clock, margin=0.0)
        self._pending = 0
        self._stamps: list[float] = []
        self._min_rtt = math.inf
        self._answers = 0
        self._first_answer = math.inf
        self._trust_after = trust_after
        self._trust_after_s = 2 * window if trust_after_s is None else trust_after_s
        self._slack_s = slack_s

    async def acquire(self, priority: int = 0) -> None:
        async with self._turns.hold(priority):
            while True:
                now = self._clock()
                self._recover(now)
                while self._stamps and self._stamps[0] + self._spacing <= now:
                    heapq.heappop(self._stamps)
                if now >= self._paused_until and self._pending + len(self._stamps) < self._limit:
                    self._pending += 1
                    return
                if now < self._paused_until:
                    wake = self._paused_until
                elif self._stamps:
                    wake = self._stamps[0] + self._spacing
                else:
                    wake = now + self._window / 20  # all counted requests are in flight: wait for an answer
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), max(_MIN_WAIT, wake - now))

    def settle(self, sent: float, answered: float | None) -> None:
        """The request granted at ``sent`` was answered at ``answered`` (None: it got no answer)."""
        if answered is None:
            stamp = self._clock()
        else:
            self._min_rtt = min(self._min_rtt, answered - sent)
            self._answers += 1
            self._first_answer = min(self._first_answer, answered)
            trusted = self._answers > self._trust_after and answered - self._first_answer >= self._trust_after_s
            stamp = max(sent, answered - self._min_rtt + self._slack_s) if trusted else answered
        self._pending = max(0, self._pending - 1)
        heapq.heappush(self._stamps, stamp)
        self._changed.set()


class AdaptiveConcurrency:
    """How many requests may be in flight at once, following the API rather than set by hand.

    The rate limiter decides how fast requests go; this decides how many may wait for their answers
    at once, and both have to allow the rate. By Little's law ``rate x latency`` requests are in
    flight at a steady rate, so the limit is that, times ``headroom`` (answers vary, and a request
    waiting for its rate grant holds a place too), from the rate in force (``rate``, which a
    throttling answer lowers) and the median of the recent latencies.

    Like the gradient of Netflix's concurrency-limits (Gradient2) the recent latency is compared with
    a long-run baseline: when it climbs past ``tolerance`` times the baseline the server is queueing,
    and the limit no longer follows the latency up but is cut by the ratio (at most by half), once per
    round trip. The baseline follows a drop at once
    and a rise over ``baseline_s`` (an exponential average in time, not in answers: a limit backed off
    to a few requests in flight still learns), so a server that is simply further away, or answers
    bigger bodies, becomes the new normal within seconds.

    The limit starts at ``initial`` and never leaves ``[floor, ceiling]``; ``ceiling`` is the user's
    ``--concurrency``. Time comes from ``clock``; ``acquire``/``release`` pair like a semaphore's.
    Waiters get places by priority, then in arrival order (``_Queue``).
    """

    def __init__(
        self,
        ceiling: int,
        rate: Callable[[], float],
        *,
        initial: int = 8,
        floor: int = 2,
        headroom: float = 2.0,
        tolerance: float = 3.0,
        recent: int = 64,
        every: int = 8,
        baseline_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, got {ceiling!r}")
        if not (headroom >= 1.0 and tolerance >= 1.0):
            raise ValueError("headroom and tolerance must be at least 1")
        self.ceiling = ceiling
        self._rate = rate
        self._floor = min(floor, ceiling)
        self._limit = max(self._floor, min(initial, ceiling))
        self._headroom = headroom
        self._tolerance = tolerance
        self._recent: deque[float] = deque(maxlen=recent)
        self._every = every
        self._baseline_s = baseline_s
        self._shrunk_at = -math.inf
        self._clock = clock
        self._since = 0
        self._baseline = math.nan
        self._updated = math.nan
        self._p50 = math.nan
        self._in_flight = 0
        self._waiters = _Queue()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        """Places taken: requests awaiting an answer, or their rate grant."""
        return self._in_flight

    @property
    def p50(self) -> float:
        """The median of the recent latencies in seconds (NaN before the first answer)."""
        return self._p50

    @property
    def baseline(self) -> float:
        return self._baseline

    async def acquire(self, priority: int = 0) -> None:
        """Wait for a place: the waiter of the highest ``priority`` that came first gets the next one.
        Cancelling a waiter takes no place."""
        if self._in_flight < self._limit and not self._waiters:
            self._in_flight += 1
            return
        waiter = self._waiters.join(priority)
        # the waiters ahead may all be cancelled ones, which hold no place
        self._wake()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._in_flight -= 1  # granted as it was cancelled: hand the place on
                self._wake()
            raise

    def release(self, latency: float | None = None) -> None:
        """Give a place back; ``latency`` is the request's time from its grant to its answer (None
        when it got none, e.g. a failed connection, which says nothing of the server's queue)."""
        self._in_flight -= 1
        if latency is not None and latency >= 0:
            self._recent.append(latency)
            self._since += 1
            if self._since >= self._every or math.isnan(self._p50):
                self._since = 0
                self._update()
        self._wake()

    def _wake(self) -> None:
        while self._in_flight < self._limit and self._waiters.serve():
            self._in_flight += 1

    def _update(self) -> None:
        recent = sorted(self._recent)
        short = recent[len(recent) // 2]
        self._p50 = short
        now = self._clock()
        if math.isnan(self._baseline) or short < self._baseline:
            self._baseline = short
        else:
            self._baseline += (short - self._baseline) * min(1.0, (now - self._updated) / self._baseline_s)
        self._updated = now
        allowed = self._tolerance * self._baseline
        if short <= allowed:
            # Little's law on the latency while the server keeps up
            target = self._rate() * short * self._headroom + 1
        else:
            # queueing: shrink by how far past the tolerance the latency went, once per round trip
            # (as TCP halves once per window): a stall of this process lengthens every answer in
            # flight at once, and the burst of answers after it must not cut the limit again and
            # again until it has collapsed
            if now - self._shrunk_at < short:
                return
            self._shrunk_at = now
            target = self._limit * max(0.5, allowed / short)
        self._limit = max(self._floor, min(self.ceiling, math.floor(target)))
