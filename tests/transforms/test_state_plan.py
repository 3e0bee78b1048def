"""The vectorised replay and planner agree with frigade.rules on random action sequences, under every
rules profile (the built-in ones and the settings a probe can find apart from them)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frigade.rules import PROFILES, Action, FlowState, Rules, initial_state, replay
from tests.transforms.helpers import (
    EventTuple,
    current_frames,
    ordered_events,
    states_from_frames,
    step_table,
    target_of,
)
from transforms.plan import plan_history, plan_state
from transforms.state import Target

CATALOG = {"f3": ("a", "b", "c"), "f1": ("only",), "f4": ("s1", "s2", "s3", "s4")}
USERS = ["u1", "u2", "u3"]
#: every built-in profile, and each unconfirmed setting flipped on one of them
RULES: list[Rules] = [
    *PROFILES.values(),
    replace(PROFILES["sdk"], name="sdk-index-0", not_started_index=0),
    replace(PROFILES["sdk"], name="sdk-last-completes", last_step_completes_flow=True),
    replace(PROFILES["legacy"], name="legacy-0-last", not_started_index=0, last_step_completes_flow=True),
]
each_profile = pytest.mark.parametrize("rules", RULES, ids=[r.name for r in RULES])


@st.composite
def event_logs(draw: st.DrawFn, max_size: int = 25) -> list[EventTuple]:
    n = draw(st.integers(0, max_size))
    out: list[EventTuple] = []
    for _ in range(n):
        user = draw(st.sampled_from(USERS))
        flow = draw(st.sampled_from(sorted(CATALOG)))
        action = draw(st.sampled_from(list(Action)))
        step = draw(st.sampled_from(CATALOG[flow])) if action.is_step else None
        out.append((user, flow, action, step))
    return out


def collect_target(events: list[EventTuple], rules: Rules = PROFILES["sdk"]) -> Target:
    return target_of(ordered_events(events, CATALOG), step_table(CATALOG), rules)


def replay_log(
    events: list[EventTuple], start: dict[tuple[str, str], FlowState] | None = None, rules: Rules = PROFILES["sdk"]
) -> dict[tuple[str, str], FlowState]:
    by_key: dict[tuple[str, str], list[tuple[Action, str | None, str | None]]] = defaultdict(list)
    for u, f, a, s in events:
        by_key[(u, f)].append((a, s, None))
    start = start or {}
    return {
        k: replay(CATALOG[k[1]], acts, start.get(k, initial_state(CATALOG[k[1]], rules)), rules)
        for k, acts in by_key.items()
    }


def replay_plan(
    plan: pl.DataFrame, start: dict[tuple[str, str], FlowState], rules: Rules = PROFILES["sdk"]
) -> dict[tuple[str, str], FlowState]:
    states = dict(start)
    for r in plan.sort("user_id", "flow_slug", "seq").iter_rows(named=True):
        key = (r["user_id"], r["flow_slug"])
        before = states.get(key, initial_state(CATALOG[key[1]], rules))
        states[key] = replay(CATALOG[key[1]], [(Action(r["action"]), r["step_id"], None)], before, rules)
    return states


@each_profile
@settings(deadline=None)
@given(events=event_logs())
def test_vectorised_target_equals_rules_replay(rules: Rules, events: list[EventTuple]) -> None:
    flows, steps = collect_target(events, rules).state()
    got = states_from_frames(flows, steps, CATALOG)
    want = {k: s.logical() for k, s in replay_log(events, rules=rules).items()}
    assert got == want


@each_profile
@settings(deadline=None)
@given(events=event_logs())
def test_state_plan_reproduces_history_and_every_request_changes_state(rules: Rules, events: list[EventTuple]) -> None:
    plan = plan_state(collect_target(events, rules), rules=rules)
    want = replay_log(events, rules=rules)
    got = replay_plan(plan, {}, rules)
    assert {k: _state(got, k, rules).logical() for k in want} == {k: s.logical() for k, s in want.items()}
    # No request is wasted: each one changes the state it is applied to.
    _assert_every_request_changes_state(plan, {}, rules)
    # State mode never needs more requests than the history has events.
    assert plan.height <= len(events)


@each_profile
@settings(deadline=None)
@given(before=event_logs(), after=event_logs())
def test_plan_from_any_current_state(rules: Rules, before: list[EventTuple], after: list[EventTuple]) -> None:
    check_plan_from(before, after, rules)


@each_profile
@settings(deadline=None)
@given(events=event_logs())
def test_history_plan_replays_every_event(rules: Rules, events: list[EventTuple]) -> None:
    plan = plan_history(collect_target(events, rules))
    assert plan.height == len(events)
    want = replay_log(events, rules=rules)
    got = replay_plan(plan, {}, rules)
    assert {k: _state(got, k, rules).logical() for k in want} == {k: s.logical() for k, s in want.items()}


def check_plan_from(before: list[EventTuple], after: list[EventTuple], rules: Rules = PROFILES["sdk"]) -> None:
    """Planning from the state ``before`` leaves reaches exactly the state ``after`` implies, and
    every request on the way changes something."""
    current = replay_log(before, rules=rules)
    plan = plan_state(collect_target(after, rules), current_frames(current), rules)
    want = replay_log(after, rules=rules)
    got = replay_plan(plan, current, rules)
    assert {k: _state(got, k, rules).logical() for k in want} == {k: s.logical() for k, s in want.items()}
    _assert_every_request_changes_state(plan, current, rules)


def _state(states: dict[tuple[str, str], FlowState], key: tuple[str, str], rules: Rules) -> FlowState:
    return states.get(key, initial_state(CATALOG[key[1]], rules))


def _assert_every_request_changes_state(
    plan: pl.DataFrame, start: dict[tuple[str, str], FlowState], rules: Rules
) -> None:
    states = dict(start)
    for r in plan.sort("user_id", "flow_slug", "seq").iter_rows(named=True):
        key = (r["user_id"], r["flow_slug"])
        before = states.get(key, initial_state(CATALOG[key[1]], rules))
        after = replay(CATALOG[key[1]], [(Action(r["action"]), r["step_id"], None)], before, rules)
        assert after.logical() != before.logical(), f"request changes nothing: {r}"
        states[key] = after


def test_finished_checklist_needs_one_request_per_step_and_an_explicit_completion() -> None:
    steps = CATALOG["f4"]
    events: list[EventTuple] = [("u1", "f4", Action.STARTED_FLOW, None)]
    for s in steps:
        events += [("u1", "f4", Action.STARTED_STEP, s), ("u1", "f4", Action.COMPLETED_STEP, s)]
    events.append(("u1", "f4", Action.COMPLETED_FLOW, None))
    plan = plan_state(collect_target(events))
    assert plan["action"].to_list() == ["COMPLETED_STEP"] * 4 + ["COMPLETED_FLOW"]
    assert plan["step_id"].to_list()[:4] == list(steps)
    assert plan["seq"].to_list() == [0, 1, 2, 3, 4]


@st.composite
def one_flow_logs(draw: st.DrawFn) -> list[EventTuple]:
    """Long histories of one user in one flow: where pointer fix-ups and resets meet."""
    flow = draw(st.sampled_from(["f1", "f3"]))
    n = draw(st.integers(0, 40))
    out: list[EventTuple] = []
    for _ in range(n):
        action = draw(st.sampled_from(list(Action)))
        out.append(("u1", flow, action, draw(st.sampled_from(CATALOG[flow])) if action.is_step else None))
    return out


@each_profile
@given(before=one_flow_logs(), after=one_flow_logs())
def test_one_long_flow_history_plans_exactly_from_any_current_state(
    rules: Rules, before: list[EventTuple], after: list[EventTuple]
) -> None:
    check_plan_from(before, after, rules)


def test_skipped_but_not_started_step_is_not_started_by_a_pointer_fix_up() -> None:
    """Regression: current from SKIPPED a + STARTED a, target from SKIPPED a + NOT_STARTED a."""
    current = replay_log([("u1", "f3", Action.SKIPPED_STEP, "a"), ("u1", "f3", Action.STARTED_STEP, "a")])
    target_log: list[EventTuple] = [("u1", "f3", Action.SKIPPED_STEP, "a"), ("u1", "f3", Action.NOT_STARTED_STEP, "a")]
    plan = plan_state(collect_target(target_log), current_frames(current))
    got = replay_plan(plan, current)
    assert got[("u1", "f3")].logical() == replay_log(target_log)[("u1", "f3")].logical()


def test_history_is_planned_from_the_whole_target_only() -> None:
    target = collect_target([("u1", "f1", Action.STARTED_FLOW, None), ("u2", "f1", Action.STARTED_FLOW, None)])
    subset = target.only(pl.DataFrame({"user_id": ["u2"], "flow_slug": ["f1"]}))
    assert plan_state(subset)["user_id"].to_list() == ["u2"]
    with pytest.raises(ValueError, match="whole target"):
        plan_history(subset)


def test_a_step_started_by_completing_the_previous_one_does_not_take_that_events_data() -> None:
    """From a current state with a completed and b cleared, the target's b start comes from a's
    completion: the STARTED_STEP b planned for it carries no data of a's event."""
    current = replay_log([("u1", "f3", Action.COMPLETED_STEP, "a"), ("u1", "f3", Action.NOT_STARTED_STEP, "b")])
    frame = ordered_events([("u1", "f3", Action.COMPLETED_STEP, "a")], CATALOG).with_columns(
        pl.lit('{"from": "a"}').alias("data")
    )
    plan = plan_state(target_of(frame, step_table(CATALOG)), current_frames(current))
    assert plan.select("action", "step_id", "data").rows() == [("STARTED_STEP", "b", None)]


def _fewest(step_ids: tuple[str, ...], start: FlowState, target: tuple[object, ...], rules: Rules) -> int:
    """Fewest writes from ``start`` to the logical state ``target``: breadth-first over the rules."""
    moves = [(a, s) for a in Action for s in (step_ids if a.is_step else (None,))]
    seen = {start.logical()}
    frontier, depth = [start], 0
    while frontier:
        if any(s.logical() == target for s in frontier):
            return depth
        nxt = []
        for state in frontier:
            for action, step in moves:
                after = replay(step_ids, [(action, step, None)], state, rules)
                if after.logical() not in seen:
                    seen.add(after.logical())
                    nxt.append(after)
        frontier, depth = nxt, depth + 1
    raise AssertionError("target not reachable")


# Where completing the last step completes the flow, a pointer fix-up on the last step could also
# complete the flow; the planner does not use that, and can send one request more than the minimum.
MINIMAL = [r for r in RULES if not r.last_step_completes_flow]


def _slack(rules: Rules, *, from_current: bool) -> int:
    """Requests over the minimum the planner may send. From nothing it is exact where completing a
    step does not start the next. A few orderings it does not search cost one request more than the
    search finds: where completing a step starts the next, re-sending SKIPPED_STEP on a step it clears
    to land the pointer after it, for one; and, from a current state, under every profile."""
    return 1 if rules.start_next_step or from_current else 0


@pytest.mark.parametrize("rules", MINIMAL, ids=[r.name for r in MINIMAL])
@settings(deadline=None, max_examples=40)
@given(before=one_flow_logs(), after=one_flow_logs())
def test_state_plan_is_the_fewest_requests(rules: Rules, before: list[EventTuple], after: list[EventTuple]) -> None:
    """As few requests as a search over the profile's rules finds (within ``_slack``), from nothing
    and from a current state."""
    flow = after[0][1] if after else "f3"
    events = [e for e in after if e[1] == flow]
    steps = CATALOG[flow]
    target = _state(replay_log(events, rules=rules), ("u1", flow), rules).logical()
    plan = plan_state(collect_target(events, rules), rules=rules)
    fewest = _fewest(steps, initial_state(steps, rules), target, rules)
    assert fewest <= plan.height <= fewest + _slack(rules, from_current=False) or not events
    current = replay_log([e for e in before if e[1] == flow], rules=rules)
    start = _state(current, ("u1", flow), rules)
    from_current = plan_state(collect_target(events, rules), current_frames(current), rules)
    if events:
        fewest = _fewest(steps, start, target, rules)
        assert fewest <= from_current.height <= fewest + _slack(rules, from_current=True)


SDK = PROFILES["sdk"]
A = Action


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # a step to clear that the previous step's completion starts again: cleared before it
        (
            [(A.COMPLETED_STEP, "c"), (A.SKIPPED_STEP, "c"), (A.STARTED_STEP, "a")],
            [(A.COMPLETED_STEP, "b"), (A.STARTED_STEP, "a"), (A.SKIPPED_STEP, "c")],
        ),
        # the pointer's fix-up pair (STARTED_STEP, NOT_STARTED_STEP on p) also clears p
        ([], [(A.SKIPPED_STEP, "a"), (A.STARTED_STEP, "a"), (A.NOT_STARTED_STEP, "a")]),
    ],
)
def test_orderings_found_by_search_are_planned_exactly_under_sdk(
    before: list[tuple[Action, str | None]], after: list[tuple[Action, str | None]]
) -> None:
    as_events = [("u1", "f3", a, s) for a, s in after]
    current = replay_log([("u1", "f3", a, s) for a, s in before], rules=SDK)
    start = _state(current, ("u1", "f3"), SDK)
    target = _state(replay_log(as_events, rules=SDK), ("u1", "f3"), SDK).logical()
    plan = plan_state(collect_target(as_events, SDK), current_frames(current) if before else None, SDK)
    assert plan.height == _fewest(CATALOG["f3"], start, target, SDK) == (2 if before else 3)
    sent = [(Action(a), step, None) for a, step in plan.select("action", "step_id").rows()]
    assert replay(CATALOG["f3"], sent, start, SDK).logical() == target
