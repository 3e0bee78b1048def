"""One test per row of the state-rules table of Frigade's documented state rules, driven over HTTP against a real
emulator process, each also checked against ``frigade.rules.replay``."""

from __future__ import annotations

from datetime import datetime

import httpx

from emulator.embedded import EmbeddedEmulator
from frigade.models import UserFlowStates
from frigade.rules import Action, FlowState, replay
from tests.emulator._http import ACTIVE_FLOWS, FLOW, STEPS, read, send, state_of

A = Action


def at(n: int) -> str:
    return f"2024-03-01T10:00:{n:02d}Z"


def run(client: httpx.Client, user: str, actions: list[tuple[Action, str | None]]) -> FlowState:
    """Send the actions with increasing createdAt; check every answer against the local replay."""
    sent: list[tuple[Action, str | None, str | None]] = []
    state: FlowState | None = None
    for i, (action, step) in enumerate(actions):
        sent.append((action, step, at(i)))
        state = state_of(send(client, user, action, step, at=at(i)))
        assert state == replay(STEPS, sent)
    assert state is not None
    return state


def test_a_new_user_is_not_started_and_points_at_the_first_step(client: httpx.Client) -> None:
    state = state_of(read(client, "fresh"))
    assert (state.started, state.completed, state.skipped, state.visible) == (False, False, False, True)
    assert state.current_step_index == -1
    assert state.current_step_id == STEPS[0]
    assert all(s.logical() == (False, False, False) for s in state.steps)


def test_started_flow_starts_and_is_a_no_op_once_started_or_completed(client: httpx.Client) -> None:
    state = run(client, "u", [(A.STARTED_FLOW, None)])
    assert state.started
    assert not state.completed
    assert (state.current_step_index, state.current_step_id) == (0, STEPS[0])
    assert state.last_action_at == at(0)

    again = run(client, "u2", [(A.COMPLETED_STEP, STEPS[0]), (A.STARTED_FLOW, None)])
    assert again.current_step_index == 1  # STARTED_FLOW did not move the pointer back

    done = run(client, "u3", [(A.COMPLETED_FLOW, None), (A.STARTED_FLOW, None)])
    assert done.completed
    assert done.started
    assert not done.visible


def test_started_step_starts_the_step_and_moves_the_pointer_even_back(client: httpx.Client) -> None:
    state = run(client, "u", [(A.STARTED_STEP, STEPS[2])])
    assert state.started
    assert state.step(STEPS[2]).started
    assert not state.step(STEPS[2]).completed
    assert state.step(STEPS[2]).last_action_at == at(0)
    assert (state.current_step_index, state.current_step_id) == (2, STEPS[2])

    back = run(client, "u2", [(A.COMPLETED_STEP, STEPS[0]), (A.COMPLETED_STEP, STEPS[1]), (A.STARTED_STEP, STEPS[0])])
    assert (back.current_step_index, back.current_step_id) == (0, STEPS[0])
    assert back.step(STEPS[0]).completed  # starting it again does not undo the completion


def test_completed_step_completes_and_moves_to_the_next_step(client: httpx.Client) -> None:
    state = run(client, "u", [(A.COMPLETED_STEP, STEPS[0])])
    first = state.step(STEPS[0])
    assert first.completed
    assert first.started
    assert not first.skipped
    assert state.started
    assert (state.current_step_index, state.current_step_id) == (1, STEPS[1])


def test_completed_step_on_the_last_step_points_at_the_last_step(client: httpx.Client) -> None:
    state = run(client, "u", [(A.COMPLETED_STEP, STEPS[-1])])
    assert (state.current_step_index, state.current_step_id) == (len(STEPS) - 1, STEPS[-1])


def test_skipped_step_skips_and_moves_like_completed_step(client: httpx.Client) -> None:
    state = run(client, "u", [(A.SKIPPED_STEP, STEPS[1])])
    step = state.step(STEPS[1])
    assert step.skipped
    assert step.started
    assert not step.completed
    assert state.started
    assert (state.current_step_index, state.current_step_id) == (2, STEPS[2])


def test_not_started_step_clears_started_and_completed_but_leaves_skipped(client: httpx.Client) -> None:
    state = run(
        client,
        "u",
        [
            (A.COMPLETED_STEP, STEPS[0]),
            (A.SKIPPED_STEP, STEPS[1]),
            (A.NOT_STARTED_STEP, STEPS[0]),
            (A.NOT_STARTED_STEP, STEPS[1]),
        ],
    )
    assert state.step(STEPS[0]).logical() == (False, False, False)
    assert state.step(STEPS[1]).logical() == (False, False, True)
    assert state.started  # the flow stays started and the pointer stays where it was
    assert state.current_step_index == 2


def test_completed_flow_completes_hides_and_keeps_the_pointer(client: httpx.Client) -> None:
    state = run(client, "u", [(A.COMPLETED_STEP, STEPS[0]), (A.COMPLETED_FLOW, None)])
    assert state.completed
    assert state.started
    assert not state.visible
    assert state.current_step_index == 1
    assert not state.step(STEPS[1]).completed  # no step is completed by it

    unstarted = run(client, "u2", [(A.COMPLETED_FLOW, None)])
    assert unstarted.started
    assert unstarted.current_step_index == 0


def test_skipped_flow_skips_and_hides(client: httpx.Client) -> None:
    state = run(client, "u", [(A.STARTED_STEP, STEPS[1]), (A.SKIPPED_FLOW, None)])
    assert state.skipped
    assert not state.visible
    assert not state.completed
    assert state.current_step_index == 1


def test_not_started_flow_resets_everything(client: httpx.Client) -> None:
    state = run(
        client,
        "u",
        [
            (A.COMPLETED_STEP, STEPS[0]),
            (A.SKIPPED_STEP, STEPS[1]),
            (A.STARTED_STEP, STEPS[2]),
            (A.COMPLETED_FLOW, None),
            (A.SKIPPED_FLOW, None),
            (A.NOT_STARTED_FLOW, None),
        ],
    )
    assert (state.started, state.completed, state.skipped, state.visible) == (False, False, False, True)
    assert (state.current_step_index, state.current_step_id) == (-1, STEPS[0])
    assert all(s.logical() == (False, False, False) for s in state.steps)


def test_completing_every_step_does_not_complete_the_flow(client: httpx.Client) -> None:
    state = run(client, "u", [(A.COMPLETED_STEP, s) for s in STEPS])
    assert all(s.completed for s in state.steps)
    assert not state.completed
    assert state.visible
    done = state_of(send(client, "u", A.COMPLETED_FLOW, at=at(9)))
    assert done.completed
    assert not done.visible


def test_every_active_flow_is_returned_after_a_write(client: httpx.Client) -> None:
    states = send(client, "u", A.STARTED_STEP, "welcome", flow="flow_welcome_tour")
    assert [f.flow_slug for f in states.eligible_flows] == list(ACTIVE_FLOWS)
    assert states.ineligible_flows == []
    assert state_of(states, "flow_welcome_tour").started
    assert not state_of(states, FLOW).started
    again = send(client, "u", A.COMPLETED_STEP, STEPS[0])
    assert state_of(again, "flow_welcome_tour").started  # other flows are recomputed, not dropped


def test_last_action_at_is_the_sent_created_at_or_the_server_time(client: httpx.Client) -> None:
    given = "2021-06-01T08:30:00.250+02:00"
    state = state_of(send(client, "u", A.STARTED_STEP, STEPS[0], at=given))
    assert state.last_action_at == given
    assert state.step(STEPS[0]).last_action_at == given

    before = datetime.now().astimezone()
    stamped = state_of(send(client, "u", A.COMPLETED_STEP, STEPS[1]))
    assert stamped.last_action_at is not None
    assert stamped.last_action_at.endswith("Z")
    assert abs((datetime.fromisoformat(stamped.last_action_at) - before).total_seconds()) < 30
    assert stamped.step(STEPS[0]).last_action_at == given


def test_a_resent_action_changes_nothing_but_is_recorded(client: httpx.Client, emu: EmbeddedEmulator) -> None:
    first = send(client, "u", A.COMPLETED_STEP, STEPS[0], at=at(1))
    second = send(client, "u", A.COMPLETED_STEP, STEPS[0], at=at(2))
    assert state_of(first).logical() == state_of(second).logical()
    assert [h["changed"] for h in emu.history("u")] == [True, False]
    stats = emu.stats()
    assert (stats["writes_accepted"], stats["writes_unchanged"]) == (2, 1)


def test_the_response_parses_into_the_wire_models(client: httpx.Client) -> None:
    answer = client.post("/v1/public/flowStates", json={"userId": "u", "flowSlug": FLOW, "actionType": "STARTED_FLOW"})
    parsed = UserFlowStates.model_validate(answer.json())
    flow = parsed.flow(FLOW)
    assert flow is not None
    assert flow.flow_name == "Onboarding Checklist"
    assert flow.flow_type == "CHECKLIST"
    assert flow.version == 1
    assert [s.id for s in flow.data.steps] == list(STEPS)
    assert all(s.state.visible and not s.state.blocked for s in flow.data.steps)
    raw_step = answer.json()["eligibleFlows"][0]["data"]["steps"][0]
    assert raw_step["title"] == "Connect your data"  # the step's config travels with its state
