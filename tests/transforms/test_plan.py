"""transforms.plan: the exact requests for small targets, from nothing and from a current state.

(The properties over random logs, under every rules profile, are in test_state_plan.py.)"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from frigade.rules import PROFILES, Action, Rules, initial_state, replay
from tests.transforms.helpers import T0, EventTuple, current_frames, ordered_events, step_table, target_of
from transforms.plan import PLAN_SCHEMA, _Grid, plan_history, plan_state
from transforms.state import Target

A = Action
CATALOG = {"f": ("a", "b", "c"), "g": ("only",)}
SDK, LEGACY = PROFILES["sdk"], PROFILES["legacy"]


def target(events: list[EventTuple], rules: Rules = SDK) -> Target:
    return target_of(ordered_events(events, CATALOG), step_table(CATALOG), rules)


def current(events: list[EventTuple], rules: Rules = SDK) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The state the server would hold after ``events``, as the planner reads it."""
    by_flow: dict[tuple[str, str], list[tuple[Action, str | None, str | None]]] = {}
    for u, f, a, s in events:
        by_flow.setdefault((u, f), []).append((a, s, None))
    return current_frames(
        {k: replay(CATALOG[k[1]], acts, initial_state(CATALOG[k[1]], rules), rules) for k, acts in by_flow.items()}
    )


def requests(plan: pl.DataFrame) -> list[tuple[object, ...]]:
    return plan.select("user_id", "flow_slug", "seq", "action", "step_id", "origin").rows()


def at(seconds: int) -> object:
    return T0 + timedelta(seconds=seconds)


FINISHED = [
    ("u1", "f", A.STARTED_STEP, "a"),
    ("u1", "f", A.COMPLETED_STEP, "a"),
    ("u1", "f", A.STARTED_STEP, "b"),
    ("u1", "f", A.COMPLETED_STEP, "b"),
    ("u1", "f", A.STARTED_STEP, "c"),
    ("u1", "f", A.COMPLETED_STEP, "c"),
    ("u1", "f", A.COMPLETED_FLOW, None),
]


@pytest.mark.parametrize("rules", [SDK, LEGACY], ids=lambda r: r.name)
def test_a_finished_flow_from_nothing_carries_each_facts_own_event(rules: Rules) -> None:
    events = ordered_events(FINISHED, CATALOG).with_columns(
        pl.when(pl.col("action") == "COMPLETED_FLOW").then(pl.lit('{"n": 1}')).alias("data")
    )
    plan = plan_state(target_of(events, step_table(CATALOG), rules), rules=rules)
    assert plan.schema == pl.Schema(PLAN_SCHEMA)
    # a completed step is a started one: one request per step, then the explicit completion
    assert plan.rows() == [
        ("u1", None, "f", 0, "COMPLETED_STEP", "a", at(1), None, 2),
        ("u1", None, "f", 1, "COMPLETED_STEP", "b", at(3), None, 4),
        ("u1", None, "f", 2, "COMPLETED_STEP", "c", at(5), None, 6),
        ("u1", None, "f", 3, "COMPLETED_FLOW", None, at(6), '{"n": 1}', 7),
    ]


def test_history_replays_every_event_with_its_own_time_and_row() -> None:
    plan = plan_history(target(FINISHED))
    assert plan.select("seq", "action", "step_id", "created_at", "origin").rows() == [
        (i, a.value, s, at(i), i + 1) for i, (_, _, a, s) in enumerate(FINISHED)
    ]


def test_started_flow_only_when_nothing_else_starts_the_flow() -> None:
    assert requests(plan_state(target([("u1", "g", A.STARTED_FLOW, None)]))) == [
        ("u1", "g", 0, "STARTED_FLOW", None, 1)
    ]
    started = target([("u1", "f", A.STARTED_FLOW, None), ("u1", "f", A.STARTED_STEP, "a")])
    assert requests(plan_state(started)) == [("u1", "f", 0, "STARTED_STEP", "a", 2)]


def test_a_skip_goes_last_and_a_reset_in_the_log_is_not_resent_from_nothing() -> None:
    skipped = target([("u1", "f", A.STARTED_STEP, "a"), ("u1", "f", A.SKIPPED_FLOW, None)])
    assert requests(plan_state(skipped)) == [
        ("u1", "f", 0, "STARTED_STEP", "a", 1),
        ("u1", "f", 1, "SKIPPED_FLOW", None, 2),
    ]
    reset = [
        ("u1", "f", A.COMPLETED_STEP, "a"),
        ("u1", "f", A.NOT_STARTED_FLOW, None),
        ("u1", "f", A.STARTED_STEP, "b"),
    ]
    assert requests(plan_state(target(reset))) == [("u1", "f", 0, "STARTED_STEP", "b", 3)]
    assert [r[3] for r in requests(plan_history(target(reset)))] == [
        "COMPLETED_STEP",
        "NOT_STARTED_FLOW",
        "STARTED_STEP",
    ]


def test_from_a_current_state_only_the_difference_is_sent() -> None:
    done_a: list[EventTuple] = [("u1", "f", A.COMPLETED_STEP, "a")]
    assert requests(plan_state(target(done_a), current(done_a))) == []
    more = target([*done_a, ("u1", "f", A.COMPLETED_STEP, "b")])
    assert requests(plan_state(more, current(done_a))) == [("u1", "f", 0, "COMPLETED_STEP", "b", 2)]
    # current state of flows and users the target does not name is left alone
    others = current([*done_a, ("u1", "g", A.COMPLETED_FLOW, None), ("u9", "g", A.COMPLETED_FLOW, None)])
    assert requests(plan_state(target(done_a), others)) == []


def test_a_completion_the_target_lacks_is_cleared_by_a_reset_at_the_flows_last_time() -> None:
    plan = plan_state(
        target([("u1", "f", A.STARTED_STEP, "a")]),
        current([("u1", "f", A.COMPLETED_STEP, "a"), ("u1", "f", A.COMPLETED_FLOW, None)]),
    )
    assert plan.select("seq", "action", "step_id", "created_at", "origin").rows() == [
        (0, "NOT_STARTED_FLOW", None, at(0), None),
        (1, "STARTED_STEP", "a", at(0), 1),
    ]


def test_each_users_requests_are_together_and_numbered_per_user_flow() -> None:
    events = [
        ("u2", "g", A.COMPLETED_STEP, "only"),
        ("u1", "f", A.STARTED_STEP, "a"),
        ("u2", "f", A.STARTED_STEP, "b"),
        ("u1", "g", A.STARTED_FLOW, None),
    ]
    plan = plan_state(target(events))
    users = plan.get_column("user_id").to_list()
    assert users == sorted(users, key=users.index)  # contiguous
    by_user = {u: [r[1:] for r in requests(plan) if r[0] == u] for u in ("u1", "u2")}
    assert sorted(by_user["u1"]) == [("f", 0, "STARTED_STEP", "a", 2), ("g", 0, "STARTED_FLOW", None, 4)]
    assert sorted(by_user["u2"]) == [("f", 0, "STARTED_STEP", "b", 3), ("g", 0, "COMPLETED_STEP", "only", 1)]


@given(
    flows=st.lists(st.lists(st.booleans(), max_size=4), max_size=6),
    index=st.lists(st.integers(-2, 5), min_size=6, max_size=6),
)
def test_the_step_grid_reads_each_flows_steps_by_position(flows: list[list[bool]], index: list[int]) -> None:
    """Per-flow facts read off a grid of one row per step (flows of any length, none included) equal
    the same facts computed flow by flow."""
    grid = _Grid.of(pl.Series([len(f) for f in flows], dtype=pl.Int64))
    mask = pl.Series([m for f in flows for m in f], dtype=pl.Boolean)
    values = pl.Series([10 * i + j for i, f in enumerate(flows) for j in range(len(f))], dtype=pl.Int64)
    at = pl.Series(index[: len(flows)], dtype=pl.Int64)
    assert grid.rows == mask.len()
    assert grid.any(mask).to_list() == [any(f) for f in flows]
    assert grid.last(mask).to_list() == [max((j for j, m in enumerate(f) if m), default=None) for f in flows]
    assert grid.at(at, values).to_list() == [
        10 * i + k if 0 <= k < len(f) else None for i, (f, k) in enumerate(zip(flows, index, strict=False))
    ]


def test_a_current_state_with_two_rows_for_one_flow_or_step_plans_once_whatever_their_order() -> None:
    """A malformed baseline (a step or flow read twice) must not multiply the grid's rows, nor make
    the plan depend on which copy comes first: each flag any copy has counts."""
    t = target([("u1", "f", A.STARTED_STEP, "a"), ("u1", "f", A.COMPLETED_STEP, "a")])
    flows, steps = (x.collect() for x in current([("u1", "f", A.STARTED_STEP, "a")]))
    once = requests(plan_state(t, (flows.lazy(), steps.lazy())))
    assert once == [("u1", "f", 0, "COMPLETED_STEP", "a", 2)]
    assert requests(plan_state(t, (pl.concat([flows, flows]).lazy(), pl.concat([steps, steps]).lazy()))) == once
    # two copies of step a that disagree: skipped in one of them, in either order
    other = steps.with_columns(pl.when(pl.col("step_id") == "a").then(True).otherwise(pl.col("c_sk")).alias("c_sk"))
    plans = {
        tuple(requests(plan_state(t, (flows.lazy(), pl.concat(pair).lazy()))))
        for pair in ([steps, other], [other, steps])
    }
    assert len(plans) == 1
    assert next(iter(plans))[0][3] == "NOT_STARTED_FLOW"  # a skip the target lacks takes a reset
