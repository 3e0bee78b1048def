"""The client's connectivity gate and interrupt, on virtual time with ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from frigade.client import FrigadeClient, WriteResult
from frigade.errors import ConnectFailedError, InterruptedRunError, MauCapError, UnreachableError
from frigade.rules import Action, initial_state
from frigade.secret import ApiKey
from tests.frigade.fake_api import BASE_URL, KEY, FakeFrigade, mau_response
from tests.frigade.test_client import FLOWS, make_client, write_of
from tests.frigade.vtime import now, run_virtual


class Outage:
    """A FakeFrigade that refuses every connection between two instants of the loop's clock."""

    def __init__(self, start: float, end: float) -> None:
        self.fake = FakeFrigade(FLOWS)
        self.start, self.end = start, end
        self.refused: list[tuple[float, str]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        t = now()
        if self.start <= t < self.end:
            self.refused.append((t, request.method))
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return self.fake.handle(request)


async def write_users(client: FrigadeClient, users: int) -> list[WriteResult]:
    before = initial_state(FLOWS["onboarding"])

    async def one(i: int) -> WriteResult:
        return await client.write(write_of(Action.STARTED_FLOW, user=f"u{i}"), before=before, after=None)

    return list(await asyncio.gather(*(one(i) for i in range(users))))


def test_a_short_outage_is_ridden_out_without_spending_attempts() -> None:
    api = Outage(0.0, 3.0)
    notices: list[str] = []

    async def main() -> tuple[list[WriteResult], float]:
        async with make_client(
            api.handle, max_attempts=2, concurrency=8, outage_window_s=60.0, notice=notices.append
        ) as client:
            results = await write_users(client, 20)
            return results, now()

    results, elapsed = run_virtual(main())
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    assert [r.attempts for r in results] == [1] * 20, "an outage must not spend the users' attempts"
    assert len(api.fake.writes()) == 20, "every user's write landed exactly once"
    assert 3.0 <= elapsed < 8.0
    # every sender paused: the refused requests are the first wave and the probes, not a hammering
    refused_writes = [t for t, method in api.refused if method == "POST"]
    probes = [t for t, method in api.refused if method == "GET"]
    assert len(refused_writes) <= 8
    assert 1 <= len(probes) <= 6
    assert len(notices) == 2
    assert notices[0].startswith(f"cannot reach {BASE_URL}: ConnectError: [Errno 111] Connection refused")
    assert "answers again" in notices[1]


def test_reads_ride_out_an_outage_too() -> None:
    api = Outage(0.0, 2.0)

    async def main() -> int:
        async with make_client(api.handle, max_attempts=1, outage_window_s=60.0) as client:
            states = await client.read_state("u1")
            return len(states.eligible_flows)

    assert run_virtual(main()) == 2


def test_an_outage_past_the_window_stops_with_cannot_reach_url() -> None:
    api = Outage(0.0, 1e9)

    async def main() -> tuple[str, float, list[str]]:
        async with make_client(api.handle, max_attempts=6, concurrency=4, outage_window_s=30.0) as client:
            with pytest.raises(UnreachableError) as info:
                await write_users(client, 10)
            at = now()
            # the client stays stopped: nothing more is tried, and it says so at once
            later: list[str] = []
            with pytest.raises(UnreachableError) as again:
                await client.read_state("u1")
            later.append(str(again.value))
            assert now() == at
            return str(info.value), at, later

    message, at, later = run_virtual(main())
    assert message.startswith(f"cannot reach {BASE_URL}: ConnectError: [Errno 111] Connection refused")
    assert later == [message]
    assert KEY not in message
    assert 30.0 <= at < 36.0
    assert api.fake.writes() == [], "nothing was ever accepted"
    assert len([1 for _, m in api.refused if m == "POST"]) <= 4


def test_a_blip_the_first_probe_sees_over_spends_an_attempt() -> None:
    """Free retries need a real outage, so a server that refuses only now and then cannot loop a user."""
    fake = FakeFrigade(FLOWS)
    refused = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if request.method == "POST" and refused < 1:
            refused += 1
            raise httpx.ConnectError("refused once")
        return fake.handle(request)

    notices: list[str] = []

    async def main() -> WriteResult:
        async with make_client(handle, max_attempts=3, outage_window_s=60.0, notice=notices.append) as client:
            return (await write_users(client, 1))[0]

    result = run_virtual(main())
    assert result.ok
    assert result.attempts == 2
    assert notices == [], "a blip is not an outage worth a line on the console"


def test_with_the_gate_off_a_refused_connection_is_an_ordinary_failed_attempt() -> None:
    api = Outage(0.0, 1e9)

    async def main() -> WriteResult:
        async with make_client(api.handle, max_attempts=3) as client:
            return (await write_users(client, 1))[0]

    result = run_virtual(main())
    assert not result.ok
    assert result.attempts == 3
    assert result.error_class == ConnectFailedError.__name__


def test_interrupt_ends_every_wait_at_once() -> None:
    """Senders queued at the limiter (here 1 request/s for 20 users) stop when interrupted, not when
    their turn comes."""
    fake = FakeFrigade(FLOWS)

    async def main() -> tuple[list[Any], float]:
        async with make_client(fake.handle, rate=1.0, concurrency=20) as client:
            loop = asyncio.get_running_loop()
            loop.call_later(2.5, client.interrupt, "Ctrl-C")
            results = await asyncio.gather(*(write_users(client, 1) for _ in range(20)), return_exceptions=True)
            return list(results), now()

    results, at = run_virtual(main())
    stopped = [r for r in results if isinstance(r, InterruptedRunError)]
    assert len(stopped) >= 16
    assert all(isinstance(r, (InterruptedRunError, list)) for r in results)
    assert 2.5 <= at < 2.6
    assert len(fake.writes()) <= 4


def test_interrupt_gives_answers_in_flight_a_grace_then_cancels_them() -> None:
    fake = FakeFrigade(FLOWS)

    async def slow(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and b"actionType" in request.content:
            await asyncio.sleep(100.0)
        return fake.handle(request)

    async def main() -> float:
        async with make_client(slow) as client:
            asyncio.get_running_loop().call_later(1.0, lambda: client.interrupt("SIGTERM", grace_s=2.0))
            with pytest.raises(InterruptedRunError, match="SIGTERM"):
                await write_users(client, 3)
            return now()

    assert 3.0 <= run_virtual(main()) < 3.1


def test_interrupt_during_an_outage_stops_the_wait() -> None:
    api = Outage(0.0, 1e9)

    async def main() -> float:
        async with make_client(api.handle, outage_window_s=300.0) as client:
            asyncio.get_running_loop().call_later(5.0, client.interrupt, "Ctrl-C")
            with pytest.raises(InterruptedRunError):
                await write_users(client, 5)
            return now()

    assert 5.0 <= run_virtual(main()) < 5.1


def test_a_negative_outage_window_is_refused() -> None:
    with pytest.raises(ValueError, match="outage_window_s"):
        FrigadeClient(BASE_URL, None, rate=1.0, outage_window_s=-1.0)


def test_a_real_refused_connection_is_named_with_its_reason_past_a_short_window() -> None:
    async def main() -> str:
        # port 9 (discard) is closed on a test machine: every connection is refused at once
        async with FrigadeClient(
            "http://127.0.0.1:9", ApiKey(KEY), rate=100.0, outage_window_s=0.5, probe_every_s=(0.05, 0.1)
        ) as client:
            with pytest.raises(UnreachableError) as info:
                await client.read_state("u1")
            return str(info.value)

    message = asyncio.run(main())
    assert message.startswith("cannot reach http://127.0.0.1:9: ConnectError: ")
    assert "Connection refused" in message
    assert KEY not in message


def test_a_stop_ends_the_other_senders_back_off_at_once() -> None:
    """The MAU cap (or a bad key, or an outage past its window) stops every sender now, not when
    its back-off ends."""
    fake = FakeFrigade(FLOWS)

    async def handle(request: httpx.Request) -> httpx.Response:
        if b'"u1"' in request.content:
            if now() < 1:
                raise httpx.ConnectError("refused")  # u1 backs off for minutes (the gate is off here)
            return fake.handle(request)
        await asyncio.sleep(1.0)
        return mau_response()

    async def main() -> tuple[list[Any], float]:
        async with make_client(handle, backoff_base=300.0, backoff_cap=600.0) as client:
            before = initial_state(FLOWS["onboarding"])
            u1 = client.write(write_of(Action.STARTED_FLOW, user="u1"), before=before, after=None)
            u2 = client.write(write_of(Action.STARTED_FLOW, user="u2"), before=before, after=None)
            results = await asyncio.gather(u1, u2, return_exceptions=True)
            return list(results), now()

    results, at = run_virtual(main())
    assert all(isinstance(r, MauCapError) for r in results), results
    assert at < 1.1
