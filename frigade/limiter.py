"""A strict sliding-window rate limiter shared by every request of a run."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["SettlingLimiter", "SlidingWindowLimiter"]


def _limit_and_window(rate: float, window: float) -> tuple[int, float]:
    """``floor(rate * window)`` grants per ``window``, or one per ``1 / rate`` when that is below one."""
    # the epsilon keeps e.g. 29 * 0.1 = 2.9000000000000004 -> 2 from flooring a true 3 down to 2
    limit = math.floor(rate * window + 1e-9)
    if limit < 1:
        return 1, 1.0 / rate
    return limit, window


class SlidingWindowLimiter:
    """At most ``limit = floor(rate * window)`` grants in any ``window`` seconds, FIFO among waiters.

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
        self._spacing = self._window * (1.0 + margin)
        self._clock = clock
        self._sleep = sleep
        # unbounded: after set_rate lowers the limit, the grants beyond the new limit still count
        self._grants: deque[float] = deque()
        self._paused_until = -math.inf
        self._lock = asyncio.Lock()
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
        limit, window = _limit_and_window(rate, self._base_window)
        if (limit, window) == (self._limit, self._window):
            return
        self._limit, self._window = limit, window
        self._spacing = window * (1.0 + self._margin)
        self._changed.set()

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

    async def acquire(self) -> None:
        """Wait for a grant. Cancelling a waiter takes no grant and keeps the others' order."""
        # asyncio.Lock hands over to its waiters in arrival order and does not let newcomers barge in,
        # so holding it across the wait makes the limiter FIFO
        async with self._lock:
            while True:
                now = self._clock()
                self._drop_old_grants(now)
                # re-read after every sleep: a pause or a new rate may have arrived, and sleeps can end
                # a little early
                ready_at = self._next_allowed()
                if now >= ready_at:
                    self._grants.append(now)
                    return
                await self._wait(ready_at - now)

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
    arrival of any request whose trip back took at least that long. Until ``trust_after`` answers have
    been seen (the first ones include connection set-up) the stamp is the answer's time itself. A
    request that got no answer (an error) is stamped when it is settled. Callers must ``settle`` every
    grant, or the limiter runs dry.
    """

    def __init__(
        self,
        rate: float,
        window: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        trust_after: int = 200,
        slack_s: float = 0.005,
    ) -> None:
        super().__init__(rate, window, clock=clock, margin=0.0)
        self._pending = 0
        self._stamps: list[float] = []
        self._min_rtt = math.inf
        self._answers = 0
        self._trust_after = trust_after
        self._slack_s = slack_s

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
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
                    await asyncio.wait_for(self._changed.wait(), max(0.0, wake - now))

    def settle(self, sent: float, answered: float | None) -> None:
        """The request granted at ``sent`` was answered at ``answered`` (None: it got no answer)."""
        if answered is None:
            stamp = self._clock()
        else:
            self._min_rtt = min(self._min_rtt, answered - sent)
            self._answers += 1
            trusted = self._answers > self._trust_after
            stamp = max(sent, answered - self._min_rtt + self._slack_s) if trusted else answered
        self._pending = max(0, self._pending - 1)
        heapq.heappush(self._stamps, stamp)
        self._changed.set()
