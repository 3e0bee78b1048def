"""Resume alignment: a user's pending requests against the state read back."""

from __future__ import annotations

from emulator.sample import sample_catalog
from frigade.models import UserFlowStates
from frigade.push import PlannedRequest
from frigade.resume import align
from frigade.rules import Action, FlowState, apply, initial_state


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
    applied, to_send, _ = align(plan[1:], plan, start, _wire(after_two))
    assert [r.seq for r in applied] == [1]
    assert [r.seq for r in to_send] == [2]
    # A state matching no point of the plan is a conflict: neither applied nor sent.
    odd = apply(start["flow_welcome_tour"], Action.SKIPPED_FLOW)
    applied, to_send, _ = align(plan, plan, start, _wire(odd))
    assert (applied, to_send) == ([], [])


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
    applied, to_send, _ = align(plan, plan, start, _wire_for(landed, "flow_announcement"))
    assert [r.seq for r in applied] == [0]
    assert [r.seq for r in to_send] == [1, 2, 3]


def _wire_for(state: FlowState, slug: str) -> UserFlowStates:
    wire = _wire(state).model_dump(by_alias=True)
    wire["eligibleFlows"][0]["flowSlug"] = slug
    wire["eligibleFlows"][0]["$state"]["lastActionAt"] = state.last_action_at
    return UserFlowStates.model_validate(wire)
