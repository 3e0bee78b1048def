"""The audit shows movement, not net counts: per flow, the user-flows that moved between statuses
(the moves back marked), who regressed, and no targeting field among the changes."""

from __future__ import annotations

import polars as pl

from transforms.audit import diff, regressions, transitions

STATUS = {
    "not started": (False, False, False),
    "started": (True, False, False),
    "completed": (True, True, False),
    "skipped": (True, False, True),
}


def flows(rows: list[tuple[str, str]], visible: bool = True) -> pl.DataFrame:
    """One flow 'f' (one step 's') per user, in the given status."""
    out = []
    for user, status in rows:
        started, completed, skipped = STATUS[status]
        out.append(
            {
                "user_id": user,
                "flow_slug": "f",
                "flow_started": started,
                "flow_completed": completed,
                "flow_skipped": skipped,
                "flow_visible": visible,
                "current_step_index": 0,
                "step_id": "s",
                "step_index": 0,
                "step_started": started,
                "step_completed": completed,
                "step_skipped": False,
            }
        )
    return pl.DataFrame(out)


def test_moves_both_ways_are_counted_apart_where_the_net_count_does_not_move() -> None:
    # two users complete the flow, two others lose their completion: completed stays at 2 -> 2
    a = flows([("u1", "started"), ("u2", "started"), ("u3", "completed"), ("u4", "completed"), ("u5", "skipped")])
    b = flows([("u1", "completed"), ("u2", "completed"), ("u3", "started"), ("u4", "not started"), ("u5", "skipped")])
    moves = {(r["before"], r["after"]): (r["user_flows"], r["regression"]) for r in transitions(a, b).to_dicts()}
    assert moves == {
        ("started", "completed"): (2, False),
        ("completed", "started"): (1, True),
        ("completed", "not started"): (1, True),
    }
    lost = regressions(diff(a, b))
    assert sorted(lost["user_id"].unique().to_list()) == ["u3", "u4"]
    assert set(lost["field"].to_list()) == {"flow_completed", "flow_started", "step_completed", "step_started"}


def test_a_skip_after_a_completion_is_a_move_back_and_a_start_is_not() -> None:
    a = flows([("u1", "completed"), ("u2", "not started"), ("u3", "skipped")])
    b = flows([("u1", "skipped"), ("u2", "started"), ("u3", "completed")])
    moves = {(r["before"], r["after"]): r["regression"] for r in transitions(a, b).to_dicts()}
    assert moves == {("completed", "skipped"): True, ("not started", "started"): False, ("skipped", "completed"): True}


def test_visibility_is_targeting_and_no_field_change() -> None:
    a = flows([("u1", "started")], visible=True)
    b = flows([("u1", "started")], visible=False)
    assert diff(a, b).is_empty()
    assert transitions(a, b).is_empty()
