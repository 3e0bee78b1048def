from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from frigade.client import CONFLICT, FrigadeClient, WriteResult
from frigade.errors import (
    AmbiguousError,
    AuthError,
    ConnectFailedError,
    MauCapError,
    RequestRejectedError,
    ThrottledError,
    UnexpectedResponseError,
)
from frigade.limiter import SlidingWindowLimiter
from frigade.models import FlowStateWrite
from frigade.rules import Action, FlowState, apply, initial_state
from frigade.secret import ApiKey
from tests.frigade.fake_api import BASE_URL, KEY, FakeFrigade, Fault, error_response, mau_response
from tests.frigade.vtime import now, run_virtual

FLOWS = {"onboarding": ("welcome", "connect", "invite"), "tour": ("a", "b")}
T0 = "2024-03-01T10:00:00.000Z"


class Sleeps:
    """The client's injected sleep: records the delays, then sleeps them in virtual time."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(seconds)


def make_client(
    handler: Callable[[httpx.Request], Any],
    sleeps: Sleeps | None = None,
    *,
    key: str | None = KEY,
    rate: float = 1000.0,
    **kwargs: Any,
) -> FrigadeClient:
    loop = asyncio.get_running_loop()
    kwargs.setdefault("limiter", SlidingWindowLimiter(rate, clock=loop.time, sleep=asyncio.sleep))
    kwargs.setdefault("transport_factory", lambda: httpx.MockTransport(handler))
    return FrigadeClient(
        BASE_URL,
        ApiKey(key) if key is not None else None,
        rate=rate,
        sleep=sleeps if sleeps is not None else Sleeps(),
        rand=random.Random(7),
        **kwargs,
    )


def write_of(
    action: Action,
    step: str | None = None,
    *,
    user: str = "u1",
    flow: str = "onboarding",
    at: str | None = T0,
) -> FlowStateWrite:
    return FlowStateWrite(user_id=user, flow_slug=flow, action_type=action, step_id=step, created_at=at)


def planned(before: FlowState, req: FlowStateWrite) -> tuple[FlowState, FlowState]:
    return before, apply(before, req.action_type, req.step_id, req.created_at)


async def write_once(client: FrigadeClient, req: FlowStateWrite, before: FlowState | None = None) -> WriteResult:
    start = before if before is not None else initial_state(FLOWS[req.flow_slug])
    b, a = planned(start, req)
    async with client:
        return await client.write(req, before=b, after=a)


# -- success and request shape ------------------------------------------------------------------


def test_write_sends_the_documented_body_with_the_key() -> None:
    fake = FakeFrigade(FLOWS)

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle), write_of(Action.COMPLETED_STEP, "welcome"))

    result = run_virtual(main())
    assert result.ok
    assert result.status == 201
    assert result.attempts == 1
    assert not result.resolved_by_read
    assert result.error_class is None
    assert result.state is not None
    flow = result.state.flow("onboarding")
    assert flow is not None
    assert flow.data.steps[0].state.completed
    [seen] = fake.writes()
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.body == {
        "userId": "u1",
        "flowSlug": "onboarding",
        "actionType": "COMPLETED_STEP",
        "stepId": "welcome",
        "createdAt": T0,
    }


def test_created_at_is_left_out_when_disabled() -> None:
    fake = FakeFrigade(FLOWS)

    async def main() -> WriteResult:
        client = make_client(fake.handle, send_created_at=False)
        return await write_once(client, write_of(Action.STARTED_FLOW))

    assert run_virtual(main()).ok
    [seen] = fake.writes()
    assert "createdAt" not in seen.body
    assert seen.body["actionType"] == "STARTED_FLOW"
    assert "stepId" not in seen.body


def test_without_a_key_no_authorization_header_is_sent() -> None:
    fake = FakeFrigade(FLOWS)

    async def main() -> None:
        async with make_client(fake.handle, key=None) as client:
            with pytest.raises(AuthError):
                await client.read_state("u1")

    run_virtual(main())
    assert "Authorization" not in fake.log[0].headers


def test_read_state_sends_only_user_and_group() -> None:
    fake = FakeFrigade(FLOWS)

    async def main() -> None:
        async with make_client(fake.handle) as client:
            states = await client.read_state("u9", "g1")
            assert [f.flow_slug for f in states.eligible_flows] == ["onboarding", "tour"]

    run_virtual(main())
    assert fake.log[0].body == {"userId": "u9", "groupId": "g1"}
    assert fake.writes() == []


# -- throttling and the MAU cap -----------------------------------------------------------------


def test_429_with_retry_after_waits_that_long_then_succeeds() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.append(Fault(error_response(429, "ThrottlerException: Too Many Requests", **{"Retry-After": "7"})))
    sleeps = Sleeps()

    async def main() -> tuple[WriteResult, float]:
        result = await write_once(make_client(fake.handle, sleeps), write_of(Action.STARTED_FLOW))
        return result, now()

    result, finished = run_virtual(main())
    assert result.ok
    assert result.attempts == 2
    assert sleeps.delays == [7.0]
    assert finished == pytest.approx(7.0)
    assert len(fake.writes()) == 2
    assert len(fake.applied) == 1


def test_retry_after_pauses_every_sender() -> None:
    fake = FakeFrigade(FLOWS)
    fake.user_faults["slow"].append(Fault(error_response(429, "Too Many Requests", **{"Retry-After": "5"})))

    async def main() -> None:
        fake.clock = now
        async with make_client(fake.handle) as client:

            async def other() -> WriteResult:
                await asyncio.sleep(1.0)
                req = write_of(Action.STARTED_FLOW, user="other")
                b, a = planned(initial_state(FLOWS["onboarding"]), req)
                return await client.write(req, before=b, after=a)

            req = write_of(Action.STARTED_FLOW, user="slow")
            b, a = planned(initial_state(FLOWS["onboarding"]), req)
            results = await asyncio.gather(client.write(req, before=b, after=a), other())
            assert all(r.ok for r in results)

    run_virtual(main())
    [other_write] = fake.writes("other")
    assert other_write.at >= 5.0, "a sender that was not told must wait for the pause too"


def test_429_without_retry_after_backs_off_with_full_jitter() -> None:
    fake = FakeFrigade(FLOWS)
    for _ in range(3):
        fake.faults.append(Fault(error_response(429, "Too Many Requests")))
    sleeps = Sleeps()

    async def main() -> WriteResult:
        client = make_client(fake.handle, sleeps, backoff_base=0.5, backoff_cap=30.0)
        return await write_once(client, write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert result.ok
    assert result.attempts == 4
    rng = random.Random(7)
    assert sleeps.delays == [rng.uniform(0, 0.5 * 2**k) for k in range(3)]


def test_backoff_is_bounded_by_the_cap_and_gives_up_as_data() -> None:
    def always_throttled(request: httpx.Request) -> httpx.Response:
        return error_response(429, "Too Many Requests")

    sleeps = Sleeps()

    async def main() -> WriteResult:
        client = make_client(always_throttled, sleeps, max_attempts=8, backoff_base=1.0, backoff_cap=2.0)
        return await write_once(client, write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert not result.ok
    assert result.attempts == 8
    assert result.status == 429
    assert result.error_class == "ThrottledError"
    assert result.message is not None
    assert result.message.startswith("gave up after 8 attempts")
    assert len(sleeps.delays) == 7
    assert all(0 <= d <= 2.0 for d in sleeps.delays)
    assert len(set(sleeps.delays)) == 7, "jitter makes every delay different"


def test_retry_after_as_http_date() -> None:
    fake = FakeFrigade(FLOWS)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake.faults.append(Fault(error_response(429, "slow down", **{"Retry-After": when})))
    sleeps = Sleeps()

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle, sleeps), write_of(Action.STARTED_FLOW))

    assert run_virtual(main()).ok
    [delay] = sleeps.delays
    assert 27.0 <= delay <= 30.0


def test_mau_cap_raises_at_once_without_retry() -> None:
    fake = FakeFrigade(FLOWS, answer_all=mau_response())
    sleeps = Sleeps()

    async def main() -> None:
        async with make_client(fake.handle, sleeps) as client:
            req = write_of(Action.STARTED_FLOW)
            with pytest.raises(MauCapError, match="maximum allowed MAUs"):
                await client.write(req, before=None, after=None)
            # the stop sticks: nothing more is sent
            with pytest.raises(MauCapError):
                await client.read_state("u2")

    run_virtual(main())
    assert len(fake.log) == 1
    assert sleeps.delays == []


# -- auth ---------------------------------------------------------------------------------------


def test_403_raises_auth_error_without_the_key() -> None:
    wrong = "api_public_WRONGKEY123456"
    fake = FakeFrigade(FLOWS, key=KEY)

    async def main() -> AuthError:
        async with make_client(fake.handle, key=wrong) as client:
            with pytest.raises(AuthError) as info:
                await client.write(write_of(Action.STARTED_FLOW), before=None, after=None)
            return info.value

    error = run_virtual(main())
    assert not error.transient
    assert error.stops_run
    rendered = [str(error), repr(error), *map(str, error.args), "".join(traceback.format_exception(error))]
    for text in rendered:
        assert wrong not in text
        assert "WRONGKEY" not in text
    assert "403" in str(error)
    assert len(fake.log) == 1


def test_a_server_message_echoing_the_key_is_scrubbed() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return error_response(403, f"invalid key {request.headers['Authorization'].split()[-1]}")

    async def main() -> AuthError:
        async with make_client(echo) as client:
            with pytest.raises(AuthError) as info:
                await client.read_state("u1")
            return info.value

    error = run_virtual(main())
    assert KEY not in str(error)
    assert "api_private_**********" in str(error)


# -- rejected requests are data -----------------------------------------------------------------


def test_400_is_returned_as_data_with_the_messages_joined() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        return error_response(400, ["stepId must be a string", "flowSlug must exist"])

    async def main() -> WriteResult:
        return await write_once(make_client(reject), write_of(Action.COMPLETED_STEP, "welcome"))

    result = run_virtual(main())
    assert not result.ok
    assert result.status == 400
    assert result.attempts == 1
    assert result.error_class == RequestRejectedError.__name__
    assert result.message == "stepId must be a string; flowSlug must exist"
    assert result.state is None


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(404, text="<html>Not Found</html>"), "<html>Not Found</html>"),
        (httpx.Response(422, text=""), "Unprocessable Entity"),
        (httpx.Response(400, json={"detail": "nope"}), '{"detail":"nope"}'),
        (error_response(404, "Flow not found"), "Flow not found"),
    ],
)
def test_rejections_with_odd_bodies(response: httpx.Response, message: str) -> None:
    async def main() -> WriteResult:
        return await write_once(make_client(lambda r: response), write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert (result.ok, result.status, result.message) == (False, response.status_code, message)


# -- ambiguous writes ---------------------------------------------------------------------------


def test_500_after_the_write_took_effect_is_resolved_by_reading_back() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.append(Fault(error_response(500, "Internal server error"), apply=True))

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle), write_of(Action.COMPLETED_STEP, "welcome"))

    result = run_virtual(main())
    assert result.ok
    assert result.resolved_by_read
    assert result.status == 500
    assert result.attempts == 1
    assert len(fake.writes()) == 1, "a write that took effect must not be resent"
    assert len(fake.reads()) == 1
    assert result.state is not None
    assert result.state.flow("onboarding") is not None


def test_500_before_the_write_took_effect_is_resent_once() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.append(Fault(error_response(500, "Internal server error"), apply=False))

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle), write_of(Action.COMPLETED_STEP, "welcome"))

    result = run_virtual(main())
    assert result.ok
    assert not result.resolved_by_read
    assert result.status == 201
    assert result.attempts == 2
    assert len(fake.writes()) == 2
    assert len(fake.applied) == 1
    assert len(fake.reads()) == 1


@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        httpx.ReadError("connection reset by peer"),
        httpx.WriteError("broken pipe"),
    ],
)
@pytest.mark.parametrize("took_effect", [True, False])
def test_dropped_connection_is_resolved_by_reading_back(exc: Exception, took_effect: bool) -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.append(Fault(exc=exc, apply=took_effect))

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle), write_of(Action.COMPLETED_STEP, "welcome"))

    result = run_virtual(main())
    assert result.ok
    assert len(fake.applied) == 1
    assert len(fake.reads()) == 1
    if took_effect:
        assert result.resolved_by_read
        assert result.status is None
        assert len(fake.writes()) == 1
    else:
        assert not result.resolved_by_read
        assert result.status == 201
        assert len(fake.writes()) == 2


def test_non_json_502_is_ambiguous() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.append(Fault(httpx.Response(502, text="<html>Bad Gateway</html>"), apply=True))

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle), write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert result.ok
    assert result.resolved_by_read
    assert len(fake.writes()) == 1


def test_read_back_matching_neither_state_is_a_conflict() -> None:
    fake = FakeFrigade(FLOWS)
    # somebody else completed the flow meanwhile
    fake.states[("u1", "onboarding")] = apply(initial_state(FLOWS["onboarding"]), Action.COMPLETED_FLOW)
    fake.faults.append(Fault(error_response(500, "Internal server error")))

    async def main() -> WriteResult:
        client = make_client(fake.handle)
        return await write_once(client, write_of(Action.COMPLETED_STEP, "welcome"), initial_state(FLOWS["onboarding"]))

    result = run_virtual(main())
    assert not result.ok
    assert result.error_class == CONFLICT
    assert result.resolved_by_read
    assert result.state is not None
    assert len(fake.writes()) == 1


def test_ambiguity_without_expected_states_is_not_resent() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.append(Fault(error_response(503, "Service Unavailable"), apply=True))

    async def main() -> WriteResult:
        async with make_client(fake.handle) as client:
            return await client.write(write_of(Action.STARTED_FLOW), before=None, after=None)

    result = run_virtual(main())
    assert not result.ok
    assert result.error_class == AmbiguousError.__name__
    assert len(fake.writes()) == 1


def test_failed_read_back_leaves_the_write_unresolved() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.append(Fault(error_response(500, "Internal server error"), apply=True))
    fake.read_faults.extend(Fault(error_response(500, "Internal server error")) for _ in range(3))

    async def main() -> WriteResult:
        client = make_client(fake.handle, max_attempts=3)
        return await write_once(client, write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert not result.ok
    assert result.error_class == AmbiguousError.__name__
    assert result.message is not None
    assert "reading the state back failed" in result.message
    assert len(fake.writes()) == 1
    assert len(fake.reads()) == 3


class TestWriteThatChangesNothing:
    """STARTED_FLOW on a started flow: only lastActionAt tells whether it took effect."""

    start = apply(initial_state(FLOWS["onboarding"]), Action.STARTED_FLOW, None, "2024-01-01T00:00:00.000Z")

    def run(self, fake: FakeFrigade, req: FlowStateWrite, **kwargs: Any) -> WriteResult:
        fake.states[("u1", "onboarding")] = self.start

        async def main() -> WriteResult:
            return await write_once(make_client(fake.handle, **kwargs), req, self.start)

        return run_virtual(main())

    def test_applied_shows_our_created_at(self) -> None:
        fake = FakeFrigade(FLOWS)
        fake.faults.append(Fault(error_response(500, "boom"), apply=True))
        # the same instant written differently still counts
        result = self.run(fake, write_of(Action.STARTED_FLOW, at="2024-03-01T10:00:00+00:00"))
        assert result.ok
        assert result.resolved_by_read
        assert len(fake.writes()) == 1

    def test_not_applied_keeps_the_old_time_and_is_resent(self) -> None:
        fake = FakeFrigade(FLOWS)
        fake.faults.append(Fault(error_response(500, "boom"), apply=False))
        result = self.run(fake, write_of(Action.STARTED_FLOW))
        assert result.ok
        assert not result.resolved_by_read
        assert len(fake.writes()) == 2

    def test_server_time_instead_of_ours_counts_as_applied(self) -> None:
        fake = FakeFrigade(FLOWS, honour_created_at=False)
        fake.faults.append(Fault(error_response(500, "boom"), apply=True))
        result = self.run(fake, write_of(Action.STARTED_FLOW))
        assert result.ok
        assert result.resolved_by_read
        assert len(fake.writes()) == 1

    def test_without_created_at_a_moved_time_counts_as_applied(self) -> None:
        fake = FakeFrigade(FLOWS)
        fake.faults.append(Fault(exc=httpx.ReadTimeout("timed out"), apply=True))
        result = self.run(fake, write_of(Action.STARTED_FLOW), send_created_at=False)
        assert result.ok
        assert result.resolved_by_read
        assert len(fake.writes()) == 1


# -- never reached the server -------------------------------------------------------------------


def test_connect_errors_are_retried() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.extend(
        [Fault(exc=httpx.ConnectError("connection refused")), Fault(exc=httpx.ConnectTimeout("timed out"))]
    )
    fake.faults.append(Fault(exc=httpx.PoolTimeout("no connection free")))
    sleeps = Sleeps()

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle, sleeps), write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert result.ok
    assert result.attempts == 4
    assert not result.resolved_by_read
    assert len(sleeps.delays) == 3
    assert fake.reads() == [], "a request that never left needs no read-back"


def test_attempts_exhausted_on_connect_errors_is_data() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def main() -> WriteResult:
        return await write_once(make_client(refuse, max_attempts=3), write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert not result.ok
    assert result.attempts == 3
    assert result.status is None
    assert result.error_class == ConnectFailedError.__name__
    assert result.message is not None
    assert "connection refused" in result.message


def test_attempts_exhausted_on_ambiguous_writes_that_did_not_take_effect() -> None:
    fake = FakeFrigade(FLOWS)
    fake.faults.extend(Fault(error_response(500, "Internal server error")) for _ in range(3))

    async def main() -> WriteResult:
        return await write_once(make_client(fake.handle, max_attempts=3), write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert not result.ok
    assert result.attempts == 3
    assert result.status == 500
    assert result.error_class == AmbiguousError.__name__
    assert len(fake.writes()) == 3
    assert len(fake.reads()) == 3
    assert fake.applied == []


# -- reads --------------------------------------------------------------------------------------


def test_read_state_retries_transient_failures() -> None:
    fake = FakeFrigade(FLOWS)
    fake.read_faults.extend(
        [
            Fault(error_response(503, "unavailable")),
            Fault(exc=httpx.ReadTimeout("slow")),
            Fault(error_response(429, "slow down", **{"Retry-After": "1"})),
        ]
    )

    async def main() -> None:
        async with make_client(fake.handle) as client:
            states = await client.read_state("u1")
            assert len(states.eligible_flows) == 2

    run_virtual(main())
    assert len(fake.reads()) == 4


def test_read_state_gives_up_by_raising_the_last_error() -> None:
    fake = FakeFrigade(FLOWS)
    fake.read_faults.extend(Fault(exc=httpx.ConnectError("refused")) for _ in range(2))

    async def main() -> None:
        async with make_client(fake.handle, max_attempts=2) as client:
            with pytest.raises(ConnectFailedError):
                await client.read_state("u1")

    run_virtual(main())


def test_read_state_rejected_and_unreadable() -> None:
    async def main() -> None:
        async with make_client(lambda r: error_response(400, ["userId should not be empty"])) as client:
            with pytest.raises(RequestRejectedError, match="userId should not be empty"):
                await client.read_state("")
        async with make_client(lambda r: httpx.Response(200, text="not json")) as client:
            with pytest.raises(UnexpectedResponseError):
                await client.read_state("u1")

    run_virtual(main())


def test_unreadable_success_body_of_a_write_is_still_a_success() -> None:
    async def main() -> WriteResult:
        return await write_once(make_client(lambda r: httpx.Response(201, text="ok")), write_of(Action.STARTED_FLOW))

    result = run_virtual(main())
    assert result.ok
    assert result.state is None
    assert result.message is not None


def test_list_flows_follows_pages() -> None:
    flows = {f"flow_{i}": ("s1", "s2") for i in range(7)}
    fake = FakeFrigade(flows, page_size=3)

    async def main() -> list[str]:
        async with make_client(fake.handle) as client:
            return [f.slug for f in await client.list_flows()]

    assert run_virtual(main()) == list(flows)
    pages = [s for s in fake.log if s.kind == "flows"]
    assert len(pages) == 3


def test_list_flows_stops_when_the_server_ignores_the_offset() -> None:
    fake = FakeFrigade({f"flow_{i}": ("s1",) for i in range(4)}, page_size=2, ignore_offset=True)

    async def main() -> list[str]:
        async with make_client(fake.handle) as client:
            return [f.slug for f in await client.list_flows()]

    assert run_virtual(main()) == ["flow_0", "flow_1"]
    assert len([s for s in fake.log if s.kind == "flows"]) == 2


def test_list_flows_throttled_then_ok() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return error_response(429, "Too Many Requests")
        return httpx.Response(200, json={"data": [{"slug": "x", "data": "steps: [{id: a}]"}]})

    async def main() -> list[str]:
        async with make_client(handler) as client:
            return [f.slug for f in await client.list_flows()]

    assert run_virtual(main()) == ["x"]


# -- pools, limiter, concurrency ----------------------------------------------------------------


def test_several_pools_are_used_and_none_is_overfilled() -> None:
    fake = FakeFrigade(FLOWS)
    in_flight: list[int] = []
    peak: list[int] = []
    transports: list[httpx.MockTransport] = []

    def factory() -> httpx.AsyncBaseTransport:
        index = len(transports)
        in_flight.append(0)
        peak.append(0)

        async def handler(request: httpx.Request) -> httpx.Response:
            in_flight[index] += 1
            peak[index] = max(peak[index], in_flight[index])
            await asyncio.sleep(0.05)
            in_flight[index] -= 1
            return fake.handle(request)

        transport = httpx.MockTransport(handler)
        transports.append(transport)
        return transport

    async def main() -> None:
        async with make_client(fake.handle, concurrency=16, transport_factory=factory) as client:
            assert client.pool_count == 4
            reqs = [write_of(Action.STARTED_FLOW, user=f"u{i}") for i in range(200)]
            results = await asyncio.gather(*(client.write(r, before=None, after=None) for r in reqs))
            assert all(r.ok for r in results)

    run_virtual(main())
    assert len(transports) == 4
    assert peak == [4, 4, 4, 4], "16 in flight over 4 pools of 4 connections"
    assert len(fake.writes()) == 200


def test_every_request_takes_a_limiter_grant() -> None:
    fake = FakeFrigade(FLOWS)

    async def main() -> None:
        fake.clock = now
        async with make_client(fake.handle, rate=10.0) as client:
            await asyncio.gather(
                *(
                    client.write(write_of(Action.STARTED_FLOW, user=f"u{i}"), before=None, after=None)
                    for i in range(25)
                ),
                *(client.read_state(f"r{i}") for i in range(5)),
            )

    run_virtual(main())
    times = sorted(s.at for s in fake.log)
    assert len(times) == 30
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) == 10


def test_default_pool_sizing() -> None:
    """httpcore's pools serialise on a lock, so its wire gets several small ones; aiohttp's one session."""

    async def main() -> None:
        async with FrigadeClient("http://127.0.0.1:9", None, rate=5.0, concurrency=64, http="httpx") as client:
            assert client.pool_count == 16
            assert client.limiter.limit == 5
        async with FrigadeClient("http://127.0.0.1:9", None, rate=5.0, concurrency=3, http="httpx") as client:
            assert client.pool_count == 1
        async with FrigadeClient("http://127.0.0.1:9", None, rate=5.0, concurrency=64) as client:
            assert client.pool_count == 1

    asyncio.run(main())


def test_a_real_refused_connection_is_a_connect_failure() -> None:
    async def main() -> WriteResult:
        # port 9 (discard) is closed on a test machine: the connection is refused at once
        async with FrigadeClient(
            "http://127.0.0.1:9", ApiKey(KEY), rate=100.0, max_attempts=2, backoff_base=0.001
        ) as client:
            return await client.write(write_of(Action.STARTED_FLOW), before=None, after=None)

    result = asyncio.run(main())
    assert not result.ok
    assert result.error_class == ConnectFailedError.__name__
    assert KEY not in (result.message or "")


def test_throttled_error_carries_retry_after() -> None:
    # the class the client retries on; its retry_after feeds the limiter pause
    assert ThrottledError("x", 2.5).retry_after == 2.5
    assert ThrottledError("x", None).transient


def test_a_write_that_lands_after_its_gateway_timeout_is_not_resent() -> None:
    """A 504 can come back before the backend applies the write: the read-back waits for it to land."""
    fake = FakeFrigade(FLOWS)
    late: list[asyncio.Task[httpx.Response]] = []

    async def apply_later(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.5)
        return fake.handle(request)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.content and b"actionType" in request.content and not late:
            late.append(asyncio.create_task(apply_later(request)))
            return error_response(504, "Gateway Timeout")
        return fake.handle(request)

    async def main() -> WriteResult:
        return await write_once(make_client(handler), write_of(Action.COMPLETED_STEP, "welcome"))

    result = run_virtual(main())
    assert result.ok
    assert result.resolved_by_read
    assert len(fake.writes()) == 1, "the late write was sent again"


@pytest.mark.parametrize(
    "message",
    [
        "Your account has used its maximum allowed MAUs.  Contact Frigade support to upgrade.",
        ["Your account has used its maximum allowed MAUs. Contact Frigade support to upgrade."],
    ],
    ids=["reworded-spacing", "list-form"],
)
def test_the_mau_cap_is_recognised_in_any_wording_that_keeps_its_core(message: str | list[str]) -> None:
    async def main() -> WriteResult:
        return await write_once(make_client(lambda r: error_response(429, message)), write_of(Action.STARTED_FLOW))

    with pytest.raises(MauCapError):
        run_virtual(main())


def test_a_malformed_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="cannot go in an HTTP header") as info:
        ApiKey("api_private_abc\ndef")
    assert "abc" not in str(info.value)
