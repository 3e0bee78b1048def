"""Resume rules: what counts as done, how read-back state aligns with a plan, batching by user."""

from __future__ import annotations

import polars as pl

from emulator.sample import sample_catalog
from frigade.models import UserFlowStates
from frigade.push import PlannedRequest
from frigade.resume import align as _align
from frigade.rules import Action, FlowState, apply, initial_state
from lifecycle.report import bar_chart, render
from lifecycle.runfolder import OUTCOME_SCHEMA
from transforms.work import iter_batches, pending_requests

PLAN = pl.DataFrame(
    {
        "request_id": [f"u1|f|{i}" for i in range(3)] + [f"u2|f|{i}" for i in range(2)],
        "user_id": ["u1"] * 3 + ["u2"] * 2,
        "flow_slug": ["f"] * 5,
        "seq": [0, 1, 2, 0, 1],
    }
)


def outcomes(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "request_id": r,
                "user_id": r.split("|")[0],
                "flow_slug": "f",
                "seq": int(r.split("|")[2]),
                "status": 201,
                "attempts": 1,
                "ok": True,
                "error_class": None,
                "message": None,
                "outcome": o,
                "at": 0.0,
                "attempt": 1,
            }
            for r, o, _ in rows
        ],
        schema=OUTCOME_SCHEMA,
    )


def test_a_resume_keeps_the_plan_order_of_users() -> None:
    """Dispatch and its journal follow the plan's order (users by hash, not by name)."""
    plan = pl.DataFrame(
        {
            "request_id": ["u9|f|0", "u1|f|0", "u5|f|0", "u5|f|1"],
            "user_id": ["u9", "u1", "u5", "u5"],
            "flow_slug": ["f"] * 4,
            "seq": [0, 0, 0, 1],
        }
    )
    got = pending_requests(plan, outcomes([("u1|f|0", "sent", "")]))
    assert got["request_id"].to_list() == ["u9|f|0", "u5|f|0", "u5|f|1"]


def test_sent_and_rejected_are_done_failed_is_retried_held_only_behind_a_rejection() -> None:
    got = pending_requests(
        PLAN,
        outcomes(
            [
                ("u1|f|0", "sent", ""),
                ("u1|f|1", "failed", ""),
                ("u1|f|2", "held", ""),
                ("u2|f|0", "rejected", ""),
                ("u2|f|1", "held", ""),
            ]
        ),
    )
    assert got["request_id"].to_list() == ["u1|f|1", "u1|f|2"]
    assert pending_requests(PLAN, outcomes([]))["request_id"].to_list() == PLAN["request_id"].to_list()


def _wire(state: FlowState) -> UserFlowStates:
    return UserFlowStates.model_validate(
        {
            "eligibleFlows": [
                {
                    "flowSlug": "flow_welcome_tour",
                    "version": 1,
                    "data": {
                        "steps": [
                            {
                                "id": sid,
                                "$state": {"started": s.started, "completed": s.completed, "skipped": s.skipped},
                            }
                            for sid, s in zip(state.step_ids, state.steps, strict=True)
                        ]
                    },
                    "$state": {
                        "currentStepIndex": state.current_step_index,
                        "started": state.started,
                        "completed": state.completed,
                        "skipped": state.skipped,
                        "visible": state.visible,
                    },
                }
            ],
            "ineligibleFlows": [],
        }
    )


def test_alignment_skips_exactly_what_the_server_already_shows() -> None:
    flow = sample_catalog().get("flow_welcome_tour")
    assert flow is not None
    plan = [
        PlannedRequest(f"u|t|{i}", "u", None, "flow_welcome_tour", i, Action.COMPLETED_STEP, s, None, None)
        for i, s in enumerate(flow.step_ids)
    ]
    start = {"flow_welcome_tour": initial_state(flow.step_ids)}
    after_two = apply(
        apply(start["flow_welcome_tour"], Action.COMPLETED_STEP, "welcome"), Action.COMPLETED_STEP, "sidebar"
    )
    applied, to_send, _ = _align(plan[1:], plan, start, _wire(after_two))
    assert [r.seq for r in applied] == [1]
    assert [r.seq for r in to_send] == [2]
    # A state matching no point of the plan is a conflict: neither applied nor sent.
    odd = apply(start["flow_welcome_tour"], Action.SKIPPED_FLOW)
    applied, to_send, _ = _align(plan, plan, start, _wire(odd))
    assert (applied, to_send) == ([], [])


def test_batches_keep_each_user_whole_and_in_plan_order() -> None:
    plan = pl.DataFrame({"user_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 1, "seq": [0, 1, 2, 0, 1, 2, 0]})
    batches = list(iter_batches(plan, 4))
    assert [b["user_id"].unique(maintain_order=True).to_list() for b in batches] == [["a"], ["b", "c"]]
    assert sum(b.height for b in batches) == plan.height


def test_report_puts_the_summary_table_first_and_charts_counts() -> None:
    run = {
        "run_id": "r",
        "status": "succeeded",
        "counts": {"rows_in": 3, "rows_sent": 1, "rows_redundant": 1, "rows_dropped": 0, "rows_quarantined": 1},
        "accounting_closes": True,
        "requests_by_action": {"COMPLETED_STEP": 4, "COMPLETED_FLOW": 1},
    }
    md = render(
        run, per_flow=[{"flow_slug": "f", "users": 2, "requests": 5, "started": 2, "completed": 1, "skipped": 0}]
    )
    assert md.index("| status | succeeded |") < md.index("## Per flow")
    assert "3 rows in = 1 planned as requests + 1 redundant + 0 dropped + 1 quarantined (closes)" in md
    lines = bar_chart([("x", 4), ("y", 1)], width=8)
    assert lines == ["x ████████ 4", "y ██······ 1"]


def test_alignment_uses_last_action_at_when_the_plan_repeats_a_state() -> None:
    """History mode can pass through one state twice: lastActionAt names the request that landed."""
    flow = sample_catalog().get("flow_announcement")
    assert flow is not None
    start = {"flow_announcement": initial_state(flow.step_ids)}
    times = [f"2024-01-01T00:00:0{i}.000Z" for i in range(4)]
    actions = [Action.STARTED_FLOW, Action.NOT_STARTED_FLOW, Action.STARTED_FLOW, Action.COMPLETED_FLOW]
    plan = [
        PlannedRequest(f"u|a|{i}", "u", None, "flow_announcement", i, a, None, times[i], None)
        for i, a in enumerate(actions)
    ]
    landed = start["flow_announcement"]
    for r in plan[:1]:
        landed = apply(landed, r.action, r.step_id, r.created_at)
    applied, to_send, _ = _align(plan, plan, start, _wire_for(landed, "flow_announcement"))
    assert [r.seq for r in applied] == [0]
    assert [r.seq for r in to_send] == [1, 2, 3]


def _wire_for(state: FlowState, slug: str) -> UserFlowStates:
    wire = _wire(state).model_dump(by_alias=True)
    wire["eligibleFlows"][0]["flowSlug"] = slug
    wire["eligibleFlows"][0]["$state"]["lastActionAt"] = state.last_action_at
    return UserFlowStates.model_validate(wire)
