"""The client's adaptive concurrency and the limiter's cut on throttling, on virtual time, against a
simulated server that answers after a latency (which may climb) and throttles above its own limit."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from frigade.client import FrigadeClient
from frigade.errors import MauCapError, ThrottledError
from frigade.limiter import THROTTLE_CUT, AdaptiveConcurrency, SettlingLimiter, SlidingWindowLimiter
from frigade.secret import ApiKey
from tests.frigade.vtime import run_virtual

_EMPTY = b'{"eligibleFlows":[],"ineligibleFlows":[]}'
_THROTTLE = b'{"statusCode":429,"message":"ThrottlerException: Too Many Requests"}'


def busiest(times: list[float], window: float = 1.0) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


@dataclass
class Server:
    """Admits at most ``limit`` requests in any second (429 with Retry-After beyond, as the
    emulator does), and answers ``latency(t)`` seconds after a request arrives."""

    latency: Callable[[float], float]
    limit: int | None = None
    jitter: float = 0.1
    admitted: list[float] = field(default_factory=list)
    throttled: int = 0
    _window: deque[float] = field(default_factory=deque)
    _rng: random.Random = field(default_factory=lambda: random.Random(5))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait = self.latency(now) * (1.0 + self._rng.uniform(-self.jitter, self.jitter))
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if self.limit is not None and len(self._window) >= self.limit:
            self.throttled += 1
            retry = max(1, math.ceil(self._window[0] + 1.0 - now))
            await asyncio.sleep(wait)
            return httpx.Response(429, content=_THROTTLE, headers={"Retry-After": str(retry)})
        self._window.append(now)
        self.admitted.append(now)
        await asyncio.sleep(wait)
        return httpx.Response(201, content=_EMPTY)


@dataclass
class Run:
    server: Server
    client: FrigadeClient
    #: (time, concurrency limit, in flight) every 100 ms
    samples: list[tuple[float, int, int]]

    def rate_between(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.server.admitted) / (end - start)

    def limit_at(self, t: float) -> int:
        return next(limit for at, limit, _ in self.samples if at >= t)


def drive(server: Server, *, rate: float, seconds: float, ceiling: int = 512, senders: int = 512) -> Run:
    """``senders`` users each reading their state over and over through one client, for ``seconds``."""

    async def main() -> Run:
        loop = asyncio.get_running_loop()
        limiter = SettlingLimiter(rate, clock=loop.time, trust_after=20)
        client = FrigadeClient(
            "https://api.frigade.test",
            ApiKey("api_private_0123456789abcdefSECRET"),
            rate=rate,
            concurrency=ceiling,
            limiter=limiter,
            max_attempts=50,
            transport_factory=lambda: httpx.MockTransport(server.handle),
            rand=random.Random(3),
        )
        samples: list[tuple[float, int, int]] = []
        end = loop.time() + seconds

        async def sender(n: int) -> None:
            while loop.time() < end:
                await client.read_state(f"u{n}")

        async def watch() -> None:
            while loop.time() < end:
                samples.append((loop.time(), client.concurrency.limit, client.concurrency.in_flight))
                await asyncio.sleep(0.1)

        async with client:
            await asyncio.gather(watch(), *(sender(n) for n in range(senders)))
        return Run(server, client, samples)

    return run_virtual(main())


@pytest.mark.parametrize("latency", [0.05, 0.15, 0.3, 0.5])
def test_converges_to_the_rate_at_any_latency_without_exceeding_it(latency: float) -> None:
    rate = 300
    run = drive(Server(lambda t: latency), rate=rate, seconds=14)
    # The limiter trusts its round trips two seconds after the first answer; until then each request
    # counts until its answer and a window after, and on this clock, where every sender starts at
    # the same instant, the waves that leaves take a few seconds to smooth out.
    assert run.rate_between(8.0, 14.0) >= 0.95 * rate
    assert busiest(run.server.admitted) <= rate, "a one-second window at the server went over the rate"
    limit = run.limit_at(13.5)
    # Little's law with headroom: enough in flight for the rate, not the whole ceiling
    assert rate * latency <= limit <= 2.5 * rate * latency + 4, limit


def test_backs_off_when_the_latency_climbs_then_settles_at_the_new_one() -> None:
    def latency(t: float) -> float:
        return 0.05 if t < 4.0 else 0.4  # the server starts queueing at t = 4

    run = drive(Server(latency), rate=300, seconds=30)
    before = run.limit_at(3.9)
    assert run.limit_at(5.5) < 0.75 * before, "a climbing latency must shrink the limit, not grow it"
    # the new latency persists: it becomes the baseline and the limit follows it up again. (The
    # rate comes back to 0.7-0.75 R, not more: the settling limiter still counts each request
    # from its answer less the 50 ms round trip it saw before the server slowed, which is safe.)
    assert run.limit_at(29.0) >= 300 * 0.4
    assert run.rate_between(25.0, 30.0) >= 0.7 * 300
    assert busiest(run.server.admitted) <= 300


def test_a_stall_of_a_moment_cuts_the_limit_once_or_twice_not_to_nothing() -> None:
    """Every request in flight during a one-second stall (this process busy, or the network) comes
    back a second late, then the answers come in a burst: the limit is cut once per round trip, not
    once per answer of the burst, and the rate is back within two seconds."""

    def latency(t: float) -> float:
        return 0.3 + (1.0 if 5.0 <= t < 5.3 else 0.0)

    run = drive(Server(latency), rate=300, seconds=12)
    assert min(limit for at, limit, _ in run.samples if at >= 4.0) >= 300 * 0.3 / 2
    assert run.rate_between(9.0, 12.0) >= 0.95 * 300


def test_a_throttling_server_below_the_rate_is_followed_with_few_429s() -> None:
    server = Server(lambda t: 0.05, limit=50)
    run = drive(server, rate=100, seconds=40, senders=64)
    answered = len(server.admitted) + server.throttled
    assert len(server.admitted) / 40 >= 0.9 * 50
    assert server.throttled <= 0.05 * answered, f"{server.throttled} of {answered} throttled"
    assert run.client.limiter.rate <= 100


def test_fixed_concurrency_without_adaptation() -> None:
    async def main() -> int:
        client = FrigadeClient("https://x.test", None, rate=10, concurrency=7, adaptive=False)
        await client.aclose()
        return client.concurrency.limit

    assert run_virtual(main()) == 7


# -- the controller alone ---------------------------------------------------------------------


def test_limit_is_rate_times_latency_with_headroom_within_floor_and_ceiling() -> None:
    c = AdaptiveConcurrency(100, lambda: 200.0, initial=4, headroom=1.5, tolerance=2.0)
    assert c.limit == 4
    for _ in range(64):
        c._in_flight += 1
        c.release(0.1)
    assert c.limit == math.floor(200 * 0.1 * 1.5 + 1)
    assert c.p50 == pytest.approx(0.1)
    for _ in range(64):
        c._in_flight += 1
        c.release(10.0)  # way past the baseline: backs off, never to below the floor
    assert 2 <= c.limit < 31
    small = AdaptiveConcurrency(5, lambda: 1000.0)
    for _ in range(16):
        small._in_flight += 1
        small.release(1.0)
    assert small.limit == 5


def test_waiters_are_served_in_order_and_a_cancelled_one_takes_no_place() -> None:
    async def main() -> list[int]:
        c = AdaptiveConcurrency(1, lambda: 1.0, initial=1, floor=1)
        await c.acquire()
        order: list[int] = []

        async def one(n: int) -> None:
            await c.acquire()
            order.append(n)
            c.release(0.01)

        tasks = [asyncio.create_task(one(n)) for n in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        c.release(0.01)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert c.in_flight == 0
        return order

    assert run_virtual(main()) == [0, 2, 3]


# -- the limiter's cut and climb back ---------------------------------------------------------


def test_throttled_cuts_to_a_share_of_what_the_server_accepted_then_climbs_back() -> None:
    t = [0.0]
    limiter = SlidingWindowLimiter(100, clock=lambda: t[0])
    for k in range(50):
        limiter.answered(0.5 + k / 100)
    t[0] = 1.0
    assert limiter.throttled(sent=0.9)
    assert limiter.rate == pytest.approx(THROTTLE_CUT * 50)
    assert limiter.limit == 45
    # answers to requests sent before the cut are the same burst: no second cut
    assert not limiter.throttled(sent=0.95)
    assert limiter.cuts == 1
    t[0] = 2.0
    assert limiter.rate == pytest.approx(45 + 2)  # 2 % of the ceiling per second
    t[0] = 100.0
    assert limiter.rate == 100, "never above the rate asked for"
    assert limiter.limit == 100
    limiter.set_rate(40)
    assert limiter.rate == 40
    assert limiter.ceiling == 40


def test_a_cut_with_nothing_accepted_takes_the_rate_in_force() -> None:
    t = [5.0]
    limiter = SlidingWindowLimiter(20, clock=lambda: t[0])
    assert limiter.cut()
    assert limiter.rate == pytest.approx(18)
    t[0] = 5.5
    assert not limiter.cut(), "another shard's cut within the window is the same burst"
    assert limiter.cuts == 1
    assert limiter.own_cuts == 0
    limiter.set_rate(10)
    assert limiter.rate == 10


def test_a_retry_after_of_one_window_is_the_cut_s_business_not_a_pause_of_every_sender() -> None:
    assert ThrottledError("x", 1.0).retry_after == 1.0
    server = Server(lambda t: 0.05, limit=20)
    drive(server, rate=40, seconds=10, senders=16)
    assert len(server.admitted) / 10 >= 0.85 * 20


@pytest.mark.parametrize(
    ("status", "headers", "body", "cuts"),
    [
        (429, {"Retry-After": "1"}, _THROTTLE, 1),
        (429, {}, _THROTTLE, 1),
        (503, {"Retry-After": "2"}, b"", 1),
        (503, {}, b"", 0),  # an outage or a crash, not the API asking for less
        (429, {}, b'{"statusCode":429,"message":"Exceeded maximum allowed MAUs for this plan"}', 0),
    ],
    ids=["429-retry-after", "429", "503-retry-after", "503", "mau-cap"],
)
def test_which_answers_cut_the_rate(status: int, headers: dict[str, str], body: bytes, cuts: int) -> None:
    answers = [httpx.Response(status, content=body, headers=headers)]

    async def handle(request: httpx.Request) -> httpx.Response:
        return answers.pop() if answers else httpx.Response(200, content=_EMPTY)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        client = FrigadeClient(
            "https://api.frigade.test",
            None,
            rate=100,
            limiter=SettlingLimiter(100, clock=loop.time),
            transport_factory=lambda: httpx.MockTransport(handle),
            rand=random.Random(1),
        )
        async with client:
            with contextlib.suppress(MauCapError):
                await client.read_state("u1")
        return client.limiter.cuts

    assert run_virtual(main()) == cuts


def test_waiters_with_more_requests_left_get_places_first_equals_in_order() -> None:
    """A push gives each request the number its user has left: the longest users must not trail."""

    async def main() -> list[str]:
        c = AdaptiveConcurrency(1, lambda: 1.0, initial=1, floor=1)
        await c.acquire()
        order: list[str] = []

        async def one(name: str, priority: int) -> None:
            await c.acquire(priority)
            order.append(name)
            c.release(0.01)

        waiting = [("a1", 1), ("b5", 5), ("c1", 1), ("d9", 9), ("e5", 5), ("f0", 0)]
        tasks = [asyncio.create_task(one(n, p)) for n, p in waiting]
        await asyncio.sleep(0)
        tasks[4].cancel()  # a cancelled waiter ahead of others holds nothing up
        c.release(0.01)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert c.in_flight == 0
        return order

    assert run_virtual(main()) == ["d9", "b5", "a1", "c1", "f0"]
