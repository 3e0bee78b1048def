from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from frigade.client import FrigadeClient
from frigade.errors import AuthError, MauCapError, RulesMismatchError
from frigade.limiter import SlidingWindowLimiter
from frigade.models import UserFlowStates
from frigade.push import FirstUsers, Outcome, PlannedRequest, PushSummary, UserWork, push
from frigade.rules import PROFILES, Action, FlowState, Rules, initial_state, replay
from frigade.secret import ApiKey
from tests.frigade.fake_api import BASE_URL, KEY, FakeFrigade, Fault, error_response, mau_response
from tests.frigade.vtime import now, run_virtual

FLOWS = {"onboarding": ("welcome", "connect", "invite", "explore", "done"), "tour": ("a", "b", "c")}

# a plausible history per flow: every step of it valid under the rules from the initial state
HISTORY: dict[str, list[tuple[Action, str | None]]] = {
    "onboarding": [
        (Action.STARTED_FLOW, None),
        (Action.STARTED_STEP, "welcome"),
        (Action.COMPLETED_STEP, "welcome"),
        (Action.COMPLETED_STEP, "connect"),
        (Action.SKIPPED_STEP, "invite"),
        (Action.COMPLETED_STEP, "explore"),
        (Action.COMPLETED_FLOW, None),
    ],
    "tour": [(Action.STARTED_STEP, "a"), (Action.COMPLETED_STEP, "a"), (Action.SKIPPED_FLOW, None)],
}


def at(user: int, seq: int) -> str:
    return f"2024-02-{1 + user % 28:02d}T{seq // 60:02d}:{seq % 60:02d}:00.000Z"


def user_work(user: str, steps: Sequence[tuple[str, Action, str | None]], n: int = 0) -> UserWork:
    requests = tuple(
        PlannedRequest(
            request_id=f"{user}|{flow}|{seq}",
            user_id=user,
            group_id=None,
            flow_slug=flow,
            seq=seq,
            action=action,
            step_id=step,
            created_at=at(n, seq),
            data={"seq": seq},
        )
        for seq, (flow, action, step) in enumerate(steps)
    )
    return UserWork(user, requests, {flow: initial_state(ids) for flow, ids in FLOWS.items()})


def backfill(user: str, n: int = 0, length: int | None = None) -> UserWork:
    """Both flows' histories, interleaved as a real export would be."""
    a = [("onboarding", act, step) for act, step in HISTORY["onboarding"]]
    b = [("tour", act, step) for act, step in HISTORY["tour"]]
    merged = [x for pair in zip(a, b + [None] * len(a), strict=False) for x in pair if x is not None]
    return user_work(user, merged[:length], n)


@dataclass
class Recorder:
    outcomes: list[Outcome] = field(default_factory=list)
    states: dict[str, list[UserFlowStates]] = field(default_factory=lambda: defaultdict(list))

    def on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def on_state(self, user: str, states: UserFlowStates) -> None:
        self.states[user].append(states)

    def kinds(self) -> Counter[str]:
        return Counter(o.outcome for o in self.outcomes)

    def of(self, user: str) -> list[tuple[str, str]]:
        return [(o.request_id, o.outcome) for o in self.outcomes if o.user_id == user]


def make_client(transport: httpx.AsyncBaseTransport, *, rate: float = 10_000.0, **kwargs: Any) -> FrigadeClient:
    loop = asyncio.get_running_loop()
    return FrigadeClient(
        BASE_URL,
        ApiKey(KEY),
        rate=rate,
        transport_factory=lambda: transport,
        limiter=SlidingWindowLimiter(rate, clock=loop.time, sleep=asyncio.sleep),
        rand=random.Random(3),
        **kwargs,
    )


async def run_push(
    fake: FakeFrigade,
    users: Iterable[UserWork] | AsyncIterator[UserWork],
    recorder: Recorder,
    *,
    concurrency: int = 8,
    delay: float = 0.0,
    seed: int = 0,
) -> PushSummary:
    rng = random.Random(seed)
    fake.clock = now
    transport = fake.delayed_transport(lambda: rng.random() * delay) if delay else fake.transport()
    async with make_client(transport, concurrency=64) as client:
        return await push(
            users, client, concurrency=concurrency, on_outcome=recorder.on_outcome, on_state=recorder.on_state
        )


def expected_state(work: UserWork, flow: str) -> FlowState:
    return replay(FLOWS[flow], ((r.action, r.step_id, r.created_at) for r in work.requests if r.flow_slug == flow))


# -- ordering and concurrency -------------------------------------------------------------------


def test_each_user_in_order_while_users_interleave() -> None:
    fake = FakeFrigade(FLOWS)
    works = [backfill(f"user{i:03d}", i) for i in range(200)]
    recorder = Recorder()

    def users() -> Iterable[UserWork]:
        yield from works

    async def main() -> PushSummary:
        return await run_push(fake, users(), recorder, concurrency=32, delay=0.01)

    summary = run_virtual(main())
    assert (summary.sent, summary.rejected, summary.held, summary.failed) == (2000, 0, 0, 0)
    assert summary.users_done == 200
    assert summary.stopped_by is None

    arrivals: dict[str, list[int]] = defaultdict(list)
    for seen in fake.writes():
        arrivals[str(seen.user_id)].append(seen.body["data"]["seq"])
    assert all(seqs == list(range(10)) for seqs in arrivals.values())
    assert len(arrivals) == 200
    # users did interleave: the arrival log switches user far more often than once per user
    switches = sum(1 for a, b in zip(fake.writes(), fake.writes()[1:], strict=False) if a.user_id != b.user_id)
    assert switches > 1000
    for work in works:
        for flow in FLOWS:
            assert fake.state(work.user_id, flow).logical() == expected_state(work, flow).logical()
    assert all(len(v) == 1 for v in recorder.states.values())
    assert len(recorder.states) == 200


def test_at_most_concurrency_users_in_flight_with_a_fixed_number_of_tasks() -> None:
    fake = FakeFrigade(FLOWS)
    active: set[str] = set()
    peak_users = 0
    peak_tasks = 0
    peak_sends = 0

    async def users() -> AsyncIterator[UserWork]:
        for i in range(300):
            yield backfill(f"u{i}", i, length=3)

    def track(outcome: Outcome) -> None:
        nonlocal peak_users, peak_tasks, peak_sends
        active.add(outcome.user_id)
        if outcome.seq == 2:
            active.discard(outcome.user_id)
        peak_users = max(peak_users, len(active))
        tasks = asyncio.all_tasks()
        sends = {t for t in tasks if t.get_name() == "frigade-send"}
        peak_tasks = max(peak_tasks, len(tasks - sends))
        peak_sends = max(peak_sends, len(sends))

    async def main() -> PushSummary:
        fake.clock = now
        rng = random.Random(5)
        async with make_client(fake.delayed_transport(lambda: rng.random() * 0.01)) as client:
            return await push(users(), client, concurrency=10, on_outcome=track, on_state=lambda u, s: None)

    summary = run_virtual(main())
    assert summary.sent == 900
    assert summary.users_done == 300
    assert 5 <= peak_users <= 10
    assert peak_tasks <= 10 + 2, "workers, not one task per user"
    assert peak_sends <= 10, "a request has a task of its own only while it is sent"


def test_empty_input() -> None:
    recorder = Recorder()
    summary = run_virtual(run_push(FakeFrigade(FLOWS), [], recorder))
    assert summary.users_done == 0
    assert recorder.outcomes == []


# -- rejected and failed requests hold the flow -------------------------------------------------


def test_rejected_request_holds_later_requests_of_the_same_flow_only() -> None:
    fake = FakeFrigade(FLOWS)
    work = backfill("alice")
    # the third write (onboarding seq 2) is refused by the server
    fake.user_faults["alice"].extend([Fault(), Fault(), Fault(error_response(400, ["data must be an object", "bad"]))])
    recorder = Recorder()
    summary = run_virtual(run_push(fake, [work], recorder))

    rows = recorder.of("alice")
    kinds = dict(rows)
    third = work.requests[2]
    assert third.flow_slug == "onboarding"
    assert kinds[third.request_id] == "rejected"
    later_onboarding = [r.request_id for r in work.requests[3:] if r.flow_slug == "onboarding"]
    assert later_onboarding
    assert all(kinds[r] == "held" for r in later_onboarding)
    assert all(kinds[r.request_id] == "sent" for r in work.requests if r.flow_slug == "tour")
    assert [r for r, _ in rows] == [r.request_id for r in work.requests], "one outcome each, in order"
    rejected = next(o for o in recorder.outcomes if o.outcome == "rejected")
    assert (rejected.status, rejected.error_class, rejected.message) == (
        400,
        "RequestRejectedError",
        "data must be an object; bad",
    )
    held = next(o for o in recorder.outcomes if o.outcome == "held")
    assert held.attempts == 0
    assert held.status is None
    assert not held.ok
    sent_onboarding = {str(s.body["data"]["seq"]) for s in fake.writes() if s.body["flowSlug"] == "onboarding"}
    assert sent_onboarding == {"0", "2"}, "nothing after the rejection was sent for that flow"
    assert summary.rejected == 1
    assert summary.held == len(later_onboarding)
    assert summary.users_done == 1
    assert len(recorder.states["alice"]) == 1


def test_invalid_request_by_the_rules_is_rejected_without_sending() -> None:
    fake = FakeFrigade(FLOWS)
    work = user_work(
        "bob",
        [
            ("onboarding", Action.STARTED_STEP, "welcome"),
            ("onboarding", Action.COMPLETED_STEP, "no-such-step"),
            ("onboarding", Action.COMPLETED_STEP, "welcome"),
            ("tour", Action.STARTED_FLOW, None),
        ],
    )
    recorder = Recorder()
    summary = run_virtual(run_push(fake, [work], recorder))
    assert [k for _, k in recorder.of("bob")] == ["sent", "rejected", "held", "sent"]
    assert recorder.outcomes[1].error_class == "RuleError"
    assert len(fake.writes()) == 2
    assert (summary.sent, summary.rejected, summary.held) == (2, 1, 1)


def test_an_unsendable_request_is_that_users_outcome_not_the_runs() -> None:
    """Second line of defence (issue 12): data nested past what the encoder takes, or data that is not
    an object at all, rejects that request as unsendable, holds its flow, and the push goes on."""
    fake = FakeFrigade(FLOWS)
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    deep_user = user_work("deep", [("onboarding", Action.STARTED_FLOW, None), ("tour", Action.STARTED_FLOW, None)])
    first = deep_user.requests[0]
    reqs = (PlannedRequest(**{**{f: getattr(first, f) for f in first.__dataclass_fields__}, "data": deep}),)
    deep_user = UserWork("deep", reqs + deep_user.requests[1:], deep_user.start)
    text_user = user_work(
        "text", [("onboarding", Action.STARTED_FLOW, None), ("onboarding", Action.COMPLETED_FLOW, None)]
    )
    t0 = text_user.requests[0]
    bad = PlannedRequest(**{**{f: getattr(t0, f) for f in t0.__dataclass_fields__}, "data": "not an object"})
    text_user = UserWork("text", (bad, *text_user.requests[1:]), text_user.start)
    recorder = Recorder()
    summary = run_virtual(run_push(fake, [deep_user, text_user, backfill("fine")], recorder))
    assert [k for _, k in recorder.of("deep")] == ["rejected", "sent"]
    assert [k for _, k in recorder.of("text")] == ["rejected", "held"]
    unsendable = [o for o in recorder.outcomes if o.error_class == "unsendable"]
    assert [o.user_id for o in unsendable] == ["deep", "text"]
    assert all(o.attempts == 0 and o.status is None for o in unsendable)
    assert all(k == "sent" for _, k in recorder.of("fine"))
    assert summary.rejected == 2
    assert summary.users_done == 3
    assert {w.user_id for w in fake.writes()} == {"deep", "fine"}


def test_failed_request_holds_the_flow() -> None:
    fake = FakeFrigade(FLOWS)
    fake.user_faults["carol"].extend(Fault(exc=httpx.ConnectError("refused")) for _ in range(3))
    work = user_work(
        "carol",
        [
            ("onboarding", Action.STARTED_FLOW, None),
            ("onboarding", Action.COMPLETED_FLOW, None),
            ("tour", Action.STARTED_FLOW, None),
        ],
    )
    recorder = Recorder()

    async def main() -> PushSummary:
        fake.clock = now
        async with make_client(fake.transport(), max_attempts=3) as client:
            return await push([work], client, concurrency=2, on_outcome=recorder.on_outcome, on_state=recorder.on_state)

    summary = run_virtual(main())
    assert [k for _, k in recorder.of("carol")] == ["failed", "held", "sent"]
    assert recorder.outcomes[0].error_class == "ConnectFailedError"
    assert recorder.outcomes[0].attempts == 3
    assert (summary.failed, summary.held, summary.sent) == (1, 1, 1)


# -- ambiguity inside push ----------------------------------------------------------------------


def test_ambiguous_writes_are_resolved_with_the_right_before_and_after() -> None:
    fake = FakeFrigade(FLOWS)
    work = user_work("dave", [("onboarding", a, s) for a, s in HISTORY["onboarding"]])
    fake.user_faults["dave"].extend(
        [
            Fault(),  # STARTED_FLOW answers normally
            Fault(error_response(500, "Internal server error"), apply=True),  # STARTED_STEP took effect
            Fault(exc=httpx.RemoteProtocolError("Server disconnected"), apply=False),  # COMPLETED_STEP lost
            Fault(),  # its resend
            Fault(exc=httpx.ReadTimeout("slow"), apply=True),  # COMPLETED_STEP connect took effect
        ]
    )
    recorder = Recorder()
    transport = fake.transport()

    async def main() -> PushSummary:
        fake.clock = now
        async with make_client(transport) as client:
            return await push([work], client, concurrency=1, on_outcome=recorder.on_outcome, on_state=recorder.on_state)

    summary = run_virtual(main())
    assert [k for _, k in recorder.of("dave")] == [
        "sent",
        "resolved_applied",
        "sent",
        "resolved_applied",
        "sent",
        "sent",
        "sent",
    ]
    assert (summary.sent, summary.resolved_applied, summary.failed) == (5, 2, 0)
    assert len(fake.applied) == 7, "every action took effect exactly once"
    assert [b["actionType"] for b in fake.applied] == [a.value for a, _ in HISTORY["onboarding"]]
    assert fake.state("dave", "onboarding").logical() == expected_state(work, "onboarding").logical()
    [last] = recorder.states["dave"]
    flow = last.flow("onboarding")
    assert flow is not None
    assert flow.state.completed


def test_ambiguous_write_whose_read_back_conflicts_holds_the_flow() -> None:
    fake = FakeFrigade(FLOWS)
    work = user_work(
        "erin",
        [("onboarding", Action.STARTED_STEP, "welcome"), ("onboarding", Action.COMPLETED_STEP, "welcome")],
    )

    lost = False

    def meddle(request: httpx.Request) -> httpx.Response:
        nonlocal lost
        if b'"flowSlug"' in request.content and not lost:
            # our write is lost, and meanwhile somebody else completed the user's flow
            lost = True
            fake.states[("erin", "onboarding")] = replay(FLOWS["onboarding"], [(Action.COMPLETED_FLOW, None, None)])
            raise httpx.ReadError("connection reset by peer")
        return fake.handle(request)

    recorder = Recorder()

    async def main() -> PushSummary:
        async with make_client(httpx.MockTransport(meddle)) as client:
            return await push([work], client, concurrency=1, on_outcome=recorder.on_outcome, on_state=recorder.on_state)

    summary = run_virtual(main())
    assert [k for _, k in recorder.of("erin")] == ["failed", "held"]
    assert recorder.outcomes[0].error_class == "Conflict"
    assert summary.failed == 1
    assert summary.held == 1
    # The conflicting state read back is what Frigade holds: it is reported for the snapshot.
    (reported,) = recorder.states["erin"]
    flow = reported.flow("onboarding")
    assert flow is not None
    assert flow.state.completed


# -- stops --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error"),
    [(error_response(403, "Forbidden resource"), AuthError), (mau_response(), MauCapError)],
)
def test_stop_raises_and_sends_nothing_more(answer: httpx.Response, error: type[Exception]) -> None:
    fake = FakeFrigade(FLOWS)
    works = [backfill(f"u{i:03d}", i) for i in range(100)]
    recorder = Recorder()
    arrivals = 0
    arrivals_at_stop: list[int] = []
    rng = random.Random(11)

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal arrivals
        arrivals += 1
        await asyncio.sleep(rng.random() * 0.01)
        if arrivals_at_stop:
            # still in flight when the stop came: it was sent before it
            return answer
        response = fake.handle(request)
        if len(fake.writes()) == 150:
            arrivals_at_stop.append(arrivals)
            return answer
        return response

    async def main() -> PushSummary:
        fake.clock = now
        async with make_client(httpx.MockTransport(handler)) as client:
            return await push(works, client, concurrency=16, on_outcome=recorder.on_outcome, on_state=recorder.on_state)

    with pytest.raises(error) as info:
        run_virtual(main())
    assert arrivals == arrivals_at_stop[0], "no request may start after the stop"
    summary = getattr(info.value, "push_summary", None)
    assert isinstance(summary, PushSummary)
    assert summary.stopped_by == error.__name__
    assert summary.sent == len([o for o in recorder.outcomes if o.outcome == "sent"])
    assert summary.sent < 150
    assert any("push stopped by" in note for note in info.value.__notes__)
    # outcomes are only ever for requests that got an answer before the stop
    assert all(o.outcome == "sent" for o in recorder.outcomes)
    assert len(recorder.outcomes) < 150


def test_stop_cancels_workers_blocked_in_the_limiter() -> None:
    fake = FakeFrigade(FLOWS, key="api_private_other")
    works = [backfill(f"u{i}", i) for i in range(50)]
    recorder = Recorder()

    async def main() -> None:
        fake.clock = now
        # one grant per second: most workers are queued in the limiter when the 403 comes
        async with make_client(fake.transport(), rate=1.0) as client:
            with pytest.raises(AuthError):
                await push(works, client, concurrency=20, on_outcome=recorder.on_outcome, on_state=recorder.on_state)
            assert now() < 2.0

    run_virtual(main())
    assert len(fake.log) == 1
    assert recorder.outcomes == []


def test_an_exception_in_a_callback_stops_the_push() -> None:
    fake = FakeFrigade(FLOWS)

    def broken(outcome: Outcome) -> None:
        raise RuntimeError("disk full")

    async def main() -> None:
        async with make_client(fake.transport()) as client:
            await push([backfill("u1")], client, concurrency=4, on_outcome=broken, on_state=lambda u, s: None)

    with pytest.raises(RuntimeError, match="disk full"):
        run_virtual(main())
    assert len(fake.writes()) == 1


def test_bad_concurrency() -> None:
    async def main() -> None:
        async with make_client(FakeFrigade(FLOWS).transport()) as client:
            with pytest.raises(ValueError, match="concurrency"):
                await push([], client, concurrency=0, on_outcome=lambda o: None, on_state=lambda u, s: None)

    run_virtual(main())


# -- holding each request against the state the server returned --------------------------------


async def _push_with(
    fake: FakeFrigade, works: list[UserWork], recorder: Recorder, rules: Rules, **kwargs: Any
) -> PushSummary:
    fake.clock = now
    async with make_client(fake.transport(), concurrency=8) as client:
        return await push(
            works,
            client,
            concurrency=2,
            on_outcome=recorder.on_outcome,
            on_state=recorder.on_state,
            rules=rules,
            **kwargs,
        )


def test_a_request_whose_effect_the_server_already_shows_is_not_sent() -> None:
    """Completing a starts b (the sdk profile): the planned STARTED_STEP b would change nothing."""
    fake = FakeFrigade(FLOWS)
    work = user_work("u1", [("tour", Action.COMPLETED_STEP, "a"), ("tour", Action.STARTED_STEP, "b")])
    recorder = Recorder()
    summary = run_virtual(_push_with(fake, [work], recorder, PROFILES["sdk"]))
    assert recorder.of("u1") == [("u1|tour|0", "sent"), ("u1|tour|1", "already_in_effect")]
    assert [b["actionType"] for b in fake.applied] == ["COMPLETED_STEP"]
    assert (summary.sent, summary.already_in_effect) == (1, 1)


def test_a_state_the_profile_did_not_predict_stops_the_first_users_naming_the_setting() -> None:
    fake = FakeFrigade(FLOWS)  # plays the sdk rules
    steps = [
        ("tour", Action.COMPLETED_STEP, "a"),
        ("tour", Action.STARTED_STEP, "b"),
        ("tour", Action.COMPLETED_STEP, "b"),
    ]
    recorder = Recorder()
    with pytest.raises(RulesMismatchError, match="start_next_step") as caught:
        run_virtual(_push_with(fake, [user_work("u1", steps)], recorder, PROFILES["legacy"]))
    assert "probe" in str(caught.value)
    assert recorder.of("u1") == [
        ("u1|tour|0", "sent"),
        ("u1|tour|1", "held_unpredicted"),
        ("u1|tour|2", "held_unpredicted"),
    ]
    assert len(fake.applied) == 1


def test_past_the_first_users_an_unpredicted_state_holds_only_that_user() -> None:
    fake = FakeFrigade(FLOWS)
    odd = user_work("u1", [("tour", Action.COMPLETED_STEP, "a"), ("tour", Action.STARTED_STEP, "c")])
    plain = user_work("u2", [("tour", Action.STARTED_STEP, "a"), ("tour", Action.STARTED_STEP, "b")])
    recorder = Recorder()
    summary = run_virtual(
        _push_with(fake, [odd, plain], recorder, PROFILES["legacy"], first_users=FirstUsers(window=0))
    )
    assert summary.stopped_by is None
    assert recorder.of("u1") == [("u1|tour|0", "sent"), ("u1|tour|1", "held_unpredicted")]
    assert recorder.of("u2") == [("u2|tour|0", "sent"), ("u2|tour|1", "sent")]
    assert summary.held_unpredicted == 1


# -- progress made outside the run: planned again, not a stop ----------------------------------


def _seeded(fake: FakeFrigade, user: str, flow: str, actions: list[tuple[Action, str | None]]) -> None:
    """State the SDK left before the run, which the push was not told of."""
    fake.states[(user, flow)] = replay(FLOWS[flow], [(a, s, None) for a, s in actions])


def test_progress_made_outside_the_run_holds_the_flow_to_be_planned_again_not_a_stop() -> None:
    fake = FakeFrigade(FLOWS)  # plays the sdk rules, as the push is told
    _seeded(fake, "u1", "onboarding", [(Action.STARTED_STEP, "explore")])
    _seeded(fake, "u1", "tour", [(Action.COMPLETED_STEP, "a")])
    steps = [
        ("onboarding", Action.COMPLETED_STEP, "welcome"),
        ("onboarding", Action.COMPLETED_STEP, "connect"),
        ("tour", Action.STARTED_STEP, "a"),
    ]
    recorder = Recorder()
    summary = run_virtual(_push_with(fake, [user_work("u1", steps)], recorder, PROFILES["sdk"], replan=True))
    assert summary.stopped_by is None
    # the first write's answer shows explore started (no setting of the rules explains it); its answer
    # also shows the tour already further than the plan started from
    assert recorder.of("u1") == [
        ("u1|onboarding|0", "sent"),
        ("u1|onboarding|1", "held_replan"),
        ("u1|tour|2", "held_replan"),
    ]
    assert summary.held_replan == 2
    assert fake.state("u1", "onboarding").steps[3].started, "what the SDK left was undone"


def test_a_wrong_profile_still_stops_the_run_when_planning_again_is_on() -> None:
    fake = FakeFrigade(FLOWS)  # plays the sdk rules
    steps = [("tour", Action.COMPLETED_STEP, "a"), ("tour", Action.STARTED_STEP, "b")]
    recorder = Recorder()
    with pytest.raises(RulesMismatchError, match="start_next_step") as caught:
        run_virtual(_push_with(fake, [user_work("u1", steps)], recorder, PROFILES["legacy"], replan=True))
    assert "--from-current" in str(caught.value)
    assert recorder.of("u1") == [("u1|tour|0", "sent"), ("u1|tour|1", "held_unpredicted")]
