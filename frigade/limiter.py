"""A strict sliding-window rate limiter shared by every request of a run."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """At most ``limit = floor(rate * window)`` grants in any ``window`` seconds, FIFO among waiters.

    A sliding log of the last ``limit`` grant times: the next grant waits until the oldest of them is
    ``window * (1 + margin)`` old. There is no burst allowance beyond ``limit``. The margin absorbs the
    scheduling jitter between a grant and the request reaching the server, at a throughput cost of
    ``margin`` (1 % by default).

    When ``rate * window < 1`` the window is stretched to ``1 / rate`` with a limit of one.
    The limiter belongs to the event loop that first waits on it.
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
        # the epsilon keeps e.g. 29 * 0.1 = 2.9000000000000004 -> 2 from flooring a true 3 down to 2
        limit = math.floor(rate * window + 1e-9)
        if limit < 1:
            limit, window = 1, 1.0 / rate
        self._limit = limit
        self._window = window
        self._spacing = window * (1.0 + margin)
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[float] = deque(maxlen=limit)
        self._paused_until = -math.inf
        self._lock = asyncio.Lock()

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

    def _next_allowed(self) -> float:
        if len(self._grants) < self._limit:
            return self._paused_until
        return max(self._paused_until, self._grants[0] + self._spacing)

    async def acquire(self) -> None:
        """Wait for a grant. Cancelling a waiter takes no grant and keeps the others' order."""
        # asyncio.Lock hands over to its waiters in arrival order and does not let newcomers barge in,
        # so holding it across the wait makes the limiter FIFO
        async with self._lock:
            while True:
                now = self._clock()
                # re-read after every sleep: a pause may have arrived, and sleeps can end a little early
                ready_at = self._next_allowed()
                if now >= ready_at:
                    self._grants.append(now)
                    return
                await self._sleep(ready_at - now)
