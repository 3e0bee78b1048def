"""Sync change detection, reconciliation and audit diffs on small frames."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from frigade.rules import Action
from tests.transforms.helpers import ordered_events, step_table, target_of
from transforms.audit import diff, funnel
from transforms.reconcile import reconcile, targeting_summary
from transforms.sync import changed_user_flows, remembered

CATALOG: dict[str, tuple[str, ...]] = {"f": ("a", "b")}


def targets(events: list[tuple[str, str, Action, str | None]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    return remembered(*target_of(ordered_events(events, CATALOG), step_table(CATALOG)).state())


def test_only_changed_user_flows_are_found_progress_and_regression_alike() -> None:
    before = targets(
        [
            ("u1", "f", Action.COMPLETED_STEP, "a"),
            ("u2", "f", Action.COMPLETED_STEP, "a"),
            ("u3", "f", Action.COMPLETED_STEP, "a"),
        ]
    )
    after = targets(
        [
            ("u1", "f", Action.COMPLETED_STEP, "a"),
            ("u2", "f", Action.COMPLETED_STEP, "b"),
            ("u3", "f", Action.STARTED_FLOW, None),
            ("u4", "f", Action.STARTED_FLOW, None),
        ]
    )
    changed = changed_user_flows(*after, *before).sort("user_id")
    assert changed["user_id"].to_list() == ["u2", "u3", "u4"]


def test_unchanged_state_is_never_changed() -> None:
    t = targets([("u1", "f", Action.SKIPPED_STEP, "b"), ("u1", "f", Action.COMPLETED_FLOW, None)])
    assert changed_user_flows(*t, *t).height == 0


def snapshot(rows: list[tuple[str, bool, bool]]) -> pl.DataFrame:
    """One flow 'f' with steps a, b; rows of (user, a completed, b completed). Completing a starts b,
    as the default (SDK) rules profile has it."""
    out = []
    for user, a_done, b_done in rows:
        for i, (step, done) in enumerate((("a", a_done), ("b", b_done))):
            out.append(
                {
                    "user_id": user,
                    "flow_slug": "f",
                    "flow_started": a_done or b_done,
                    "flow_completed": False,
                    "flow_skipped": False,
                    "flow_visible": True,
                    "current_step_index": 1 if a_done else 0,
                    "current_step_id": "b" if a_done else "a",
                    "flow_last_action_at": "2024-01-01T00:00:00.000Z",
                    "step_id": step,
                    "step_index": i,
                    "step_started": done or (step == "b" and a_done),
                    "step_completed": done,
                    "step_skipped": False,
                    "step_last_action_at": None,
                    "captured_at": 0.0,
                }
            )
    return pl.DataFrame(out)


def test_reconcile_lists_each_mismatching_field_and_missing_users() -> None:
    flows, steps = targets([("u1", "f", Action.COMPLETED_STEP, "a"), ("u2", "f", Action.COMPLETED_STEP, "a")])
    exp_flows = flows.with_columns(pl.lit(datetime(2024, 1, 1, tzinfo=UTC)).alias("last_ts"))
    snap = snapshot([("u1", False, False)])
    got = reconcile(exp_flows, steps, snap, pl.Series(["u1", "u2"]))
    fields = set(zip(got["user_id"], got["field"], got["step_id"].fill_null(""), strict=True))
    assert ("u2", "state", "") in fields
    assert ("u1", "started", "") in fields
    assert ("u1", "current_step_index", "") in fields
    assert ("u1", "completed", "a") in fields
    assert reconcile(exp_flows, steps, snapshot([("u1", True, False)]), pl.Series(["u1"])).height == 0


def test_reconcile_checks_last_action_at_against_the_last_created_at_sent() -> None:
    flows, steps = targets([("u1", "f", Action.COMPLETED_STEP, "a")])
    snap = snapshot([("u1", True, False)])
    sent = pl.DataFrame(
        {"user_id": ["u1"], "flow_slug": ["f"], "created_at": [datetime(2024, 1, 1, 0, 0, 0, 400, tzinfo=UTC)]}
    )
    assert reconcile(flows, steps, snap, pl.Series(["u1"]), sent).height == 0
    sent = sent.with_columns(pl.lit(datetime(2023, 1, 1, tzinfo=UTC)).alias("created_at"))
    got = reconcile(flows, steps, snap, pl.Series(["u1"]), sent)
    assert got["field"].to_list() == ["last_action_at"]


def test_audit_diff_names_each_change_and_users_in_only_one_snapshot() -> None:
    a = snapshot([("u1", True, False), ("u2", True, True), ("gone", True, False)])
    b = snapshot([("u1", True, True), ("u2", False, False), ("new", False, False)])
    d = diff(a, b)
    rows = {(r["user_id"], r["step_id"], r["field"], r["before"], r["after"]) for r in d.to_dicts()}
    assert ("u1", "b", "completed", "false", "true") in {(u, s, f.replace("step_", ""), x, y) for u, s, f, x, y in rows}
    assert ("gone", None, "user", "present", "absent") in rows
    assert ("new", None, "user", "absent", "present") in rows
    assert not any(r[0] == "u1" and r[2] == "flow_started" for r in rows)
    f = funnel(a, b)
    assert f.filter(pl.col("step_id") == "a")[["completed_a", "completed_b"]].row(0) == (3, 1)
    assert f.filter(pl.col("step_id") == "b")[["completed_a", "completed_b"]].row(0) == (1, 1)


def test_visible_is_targeting_never_a_mismatch() -> None:
    """A user outside a flow's audience sees it present but not visible: the state the migration set
    is still exact, and the hidden flow is counted as targeting."""
    flows, steps = targets([("u1", "f", Action.COMPLETED_STEP, "a")])
    hidden = snapshot([("u1", True, False)]).with_columns(pl.lit(False).alias("flow_visible"))
    assert reconcile(flows, steps, hidden, pl.Series(["u1"])).height == 0
    assert targeting_summary(hidden) == {"user_flows": 1, "hidden_by_targeting": 1}
    assert targeting_summary(snapshot([("u1", True, False)])) == {"user_flows": 1, "hidden_by_targeting": 0}
