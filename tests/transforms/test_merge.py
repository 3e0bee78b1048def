"""The three-way merge of the source's target with the state Frigade holds (transforms.merge), and
planning from that state to the merged target."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings

from frigade.rules import PROFILES, Action, FlowState, Rules
from tests.transforms.helpers import EventTuple, state_frames, states_from_frames
from tests.transforms.test_state_plan import (
    CATALOG,
    _assert_every_request_changes_state,
    _state,
    collect_target,
    event_logs,
    replay_log,
    replay_plan,
)
from transforms.merge import merge_state, merge_summary, merge_target, replan
from transforms.plan import plan_state
from transforms.state import target_from_state
from transforms.sync import StateFrames, as_current, remembered

A = Action
SDK = PROFILES["sdk"]
RULES = [PROFILES["sdk"], PROFILES["legacy"]]
each_profile = pytest.mark.parametrize("rules", RULES, ids=[r.name for r in RULES])


def merged_plan(
    source: list[EventTuple],
    current: dict[tuple[str, str], FlowState],
    base: dict[tuple[str, str], FlowState] | None,
    rules: Rules,
    policy: str = "merge",
) -> tuple[pl.DataFrame, dict[tuple[str, str], tuple[object, ...]], pl.DataFrame]:
    """The plan from ``current`` to the merged target, the merged target, and the conflicts."""
    target, merged = merge_target(
        collect_target(source, rules),
        state_frames(current),
        state_frames(base) if base is not None else None,
        "merge" if policy == "merge" else "overwrite",
        rules,
    )
    plan = plan_state(target, as_current(*state_frames(current)), rules)
    return plan, states_from_frames(*target.state(), CATALOG), merged.conflicts


def _flags(state: tuple[object, ...]) -> set[str]:
    """The names of the flags a logical state tuple has set."""
    started, completed, skipped, _, steps = state
    out = {n for n, v in (("started", started), ("completed", completed), ("skipped", skipped)) if v}
    assert isinstance(steps, tuple)
    for i, step in enumerate(steps):
        out |= {f"{i}.{n}" for n, v in zip(("started", "completed", "skipped"), step, strict=True) if v}
    return out


@each_profile
@settings(deadline=None)
@given(frigade=event_logs(), source=event_logs())
def test_a_first_backfill_keeps_everything_true_on_either_side(
    rules: Rules, frigade: list[EventTuple], source: list[EventTuple]
) -> None:
    """No base: every flag true in Frigade or in the export is true after, no pointer moved backwards,
    the plan lands exactly on the merged target and every request changes something."""
    current = replay_log(frigade, rules=rules)
    plan, merged, _ = merged_plan(source, current, None, rules)
    want_source = {k: s.logical() for k, s in replay_log(source, rules=rules).items()}
    got = replay_plan(plan, current, rules)
    assert {k: _state(got, k, rules).logical() for k in merged} == merged
    _assert_every_request_changes_state(plan, current, rules)
    for key, m in merged.items():
        before = _state(current, key, rules).logical()
        assert _flags(before) <= _flags(m), key
        assert _flags(want_source[key]) <= _flags(m), key
        assert int(m[3]) >= int(before[3])  # type: ignore[call-overload]


@each_profile
@settings(deadline=None)
@given(frigade=event_logs(), source=event_logs())
def test_overwrite_lands_exactly_on_the_export(
    rules: Rules, frigade: list[EventTuple], source: list[EventTuple]
) -> None:
    current = replay_log(frigade, rules=rules)
    plan, merged, _ = merged_plan(source, current, None, rules, policy="overwrite")
    want = {k: s.logical() for k, s in replay_log(source, rules=rules).items()}
    assert merged == want
    got = replay_plan(plan, current, rules)
    assert {k: _state(got, k, rules).logical() for k in want} == want
    _assert_every_request_changes_state(plan, current, rules)


@each_profile
@settings(deadline=None)
@given(old=event_logs(), new=event_logs(), frigade=event_logs())
def test_three_way_merge_with_a_base(
    rules: Rules, old: list[EventTuple], new: list[EventTuple], frigade: list[EventTuple]
) -> None:
    """Base = what the source asked for last time; Frigade's state is the base plus its own changes.
    Where only the source changed, its state wins (resets included); where only Frigade did, Frigade's
    is kept and nothing is sent; where both did, both sides' flags are kept."""
    base = replay_log(old, rules=rules)
    current = replay_log(frigade, dict(base), rules)
    current = {**base, **current}
    plan, merged, conflicts = merged_plan(old + new, current, base, rules)
    source = {k: s.logical() for k, s in replay_log(old + new, rules=rules).items()}
    got = replay_plan(plan, current, rules)
    assert {k: _state(got, k, rules).logical() for k in merged} == merged
    _assert_every_request_changes_state(plan, current, rules)
    clashing = set(conflicts.select("user_id", "flow_slug").iter_rows())
    for key, m in merged.items():
        b, c, s = _state(base, key, rules).logical(), _state(current, key, rules).logical(), source[key]
        if s == b:
            assert m == c
        elif c == b:
            assert m == s
        else:
            assert _flags(c) | _flags(s) == _flags(m)
            assert int(m[3]) == max(int(c[3]), int(s[3]))  # type: ignore[call-overload]
            c_more = bool(_flags(c) - _flags(s)) or int(c[3]) > int(s[3])  # type: ignore[call-overload]
            # Frigade's progress the export lacks is kept and named, whether or not the export has its own
            assert (key in clashing) == c_more
        if s == b or c == b:
            assert key not in clashing


def _state_of(step_ids: tuple[str, ...], actions: list[tuple[Action, str | None]], rules: Rules = SDK) -> FlowState:
    from frigade.rules import initial_state, replay

    return replay(step_ids, [(a, s, None) for a, s in actions], initial_state(step_ids, rules), rules)


def test_sync_applies_a_source_reset_and_keeps_what_frigade_advanced() -> None:
    """The tool wrote f3 (a, b done) and f4 (s1 done) for u1; since then the export reset f3, and
    the user advanced f4 in Frigade. The reset is applied, f4's progress is kept and not resent."""
    f3, f4 = CATALOG["f3"], CATALOG["f4"]
    wrote: list[EventTuple] = [
        ("u1", "f3", A.COMPLETED_STEP, "a"),
        ("u1", "f3", A.COMPLETED_STEP, "b"),
        ("u1", "f4", A.COMPLETED_STEP, "s1"),
    ]
    base = replay_log(wrote)
    current = {
        ("u1", "f3"): base[("u1", "f3")],
        ("u1", "f4"): _state_of(f4, [(A.COMPLETED_STEP, "s1"), (A.COMPLETED_STEP, "s2"), (A.COMPLETED_STEP, "s3")]),
    }
    plan, merged, conflicts = merged_plan([*wrote, ("u1", "f3", A.NOT_STARTED_FLOW, None)], current, base, SDK)
    assert plan.select("flow_slug", "action").rows() == [("f3", "NOT_STARTED_FLOW")]
    assert merged[("u1", "f3")] == _state_of(f3, []).logical()
    assert merged[("u1", "f4")] == current[("u1", "f4")].logical()
    assert conflicts.is_empty()


def test_both_changed_keeps_progress_from_both_and_lists_the_conflict() -> None:
    f4 = CATALOG["f4"]
    base = {("u1", "f4"): _state_of(f4, [(A.COMPLETED_STEP, "s1")])}
    current = {
        ("u1", "f4"): _state_of(f4, [(A.COMPLETED_STEP, "s1"), (A.COMPLETED_STEP, "s2"), (A.COMPLETED_STEP, "s3")])
    }
    source: list[EventTuple] = [("u1", "f4", A.COMPLETED_STEP, "s1"), ("u1", "f4", A.SKIPPED_STEP, "s2")]
    plan, merged, conflicts = merged_plan(source, current, base, SDK)
    m = merged[("u1", "f4")]
    assert m[3] == 3  # the further pointer: Frigade's
    assert m[4][1] == (True, True, True)  # type: ignore[index]  # completed in Frigade, skipped in the export
    assert plan.select("action", "step_id").rows()[0] == ("SKIPPED_STEP", "s2")
    assert conflicts.rows() == [("u1", "f4")]


def test_an_export_reset_of_what_frigade_advanced_keeps_frigade_and_is_a_conflict() -> None:
    """The export resets a flow a sync wrote while the user advanced it in Frigade: Frigade's progress
    stays (nothing sent) and the user-flow is listed, not kept silently."""
    f4 = CATALOG["f4"]
    base = {("u1", "f4"): _state_of(f4, [(A.COMPLETED_STEP, "s1")])}
    current = {("u1", "f4"): _state_of(f4, [(A.COMPLETED_STEP, "s1"), (A.COMPLETED_STEP, "s2")])}
    source: list[EventTuple] = [("u1", "f4", A.COMPLETED_STEP, "s1"), ("u1", "f4", A.NOT_STARTED_FLOW, None)]
    plan, merged, conflicts = merged_plan(source, current, base, SDK)
    assert merged[("u1", "f4")] == current[("u1", "f4")].logical()
    assert plan.is_empty()
    assert conflicts.rows() == [("u1", "f4")]
    _, _, overwritten = merged_plan(source, current, base, SDK, policy="overwrite")
    assert overwritten.is_empty()


def test_summary_counts_what_the_policy_did() -> None:
    f4 = CATALOG["f4"]
    current = {
        ("u1", "f4"): _state_of(f4, [(A.COMPLETED_STEP, "s1")]),
        ("u2", "f1"): _state_of(CATALOG["f1"], [(A.STARTED_FLOW, None)]),
    }
    source: list[EventTuple] = [("u1", "f4", A.COMPLETED_STEP, "s2"), ("u3", "f4", A.COMPLETED_STEP, "s1")]
    target = collect_target(source)
    merged = merge_state(target.flows, target.steps, state_frames(current))
    summary = merge_summary(merged, state_frames(current), "merge")
    assert summary["users_with_state"] == 2
    assert summary["user_flows_with_state"] == 1
    assert summary["user_flows_merged"] == 1
    assert summary["users_with_conflicts"] == 1


@each_profile
@settings(deadline=None)
@given(before=event_logs(), after=event_logs())
def test_a_target_known_only_as_a_state_is_planned_exactly(
    rules: Rules, before: list[EventTuple], after: list[EventTuple]
) -> None:
    """``target_from_state``: the same state without the events that set it plans to the same place."""
    current = replay_log(before, rules=rules)
    target = collect_target(after, rules)
    bare = target_from_state(*target.state(), target.codes)
    plan = plan_state(bare, as_current(*state_frames(current)), rules)
    want = states_from_frames(*target.state(), CATALOG)
    got = replay_plan(plan, current, rules)
    assert {k: _state(got, k, rules).logical() for k in want} == want
    _assert_every_request_changes_state(plan, current, rules)


def test_replan_goes_from_the_returned_state_numbered_after_the_earlier_plan() -> None:
    """u1's f4 was planned from nothing, but the server showed s3 completed: planned again from there,
    its requests after the earlier ones, each with the earlier request's time where there is one."""
    source: list[EventTuple] = [("u1", "f4", A.COMPLETED_STEP, "s1"), ("u1", "f4", A.COMPLETED_STEP, "s2")]
    target = collect_target(source)
    earlier = plan_state(target).with_columns(pl.format("{}|{}|{}", "user_id", "flow_slug", "seq").alias("request_id"))
    returned = {("u1", "f4"): _state_of(CATALOG["f4"], [(A.COMPLETED_STEP, "s1"), (A.COMPLETED_STEP, "s3")])}
    held = pl.DataFrame({"user_id": ["u1"], "flow_slug": ["f4"]})
    expected = StateFrames(*target.state())
    rows, flows, steps = replan(
        held, remembered(*target.state()), expected, state_frames(returned), None, earlier, target.codes, "merge"
    )
    # s2 completed (the export's), then the pointer back at the further step (Frigade's): s4
    assert rows.select("seq", "action", "step_id").rows() == [(2, "COMPLETED_STEP", "s2"), (3, "STARTED_STEP", "s4")]
    s2 = earlier.filter(pl.col("step_id") == "s2")["created_at"].item()
    # a request no earlier one matches takes the flow's last time
    assert rows["created_at"].to_list() == [s2, earlier["created_at"].max()]
    assert rows["request_id"].to_list() == ["u1|f4|2", "u1|f4|3"]
    merged = states_from_frames(flows, steps, CATALOG)[("u1", "f4")]
    assert merged[4] == ((True, True, False), (True, True, False), (True, True, False), (True, False, False))
    assert flows.columns == expected.flows.columns
