"""Frigade's own JavaScript SDK suite, ported: the sequences its integration tests send to the live API
(FrigadeHQ/javascript, packages/js-api/test/frigade.int.test.ts) and its mocked server replies
(packages/js-api/test/flow-branching-visibility.test.ts), sent over HTTP to a real emulator process
playing the default (sdk) profile, with the answers those tests expect. Each test names its source.

What the SDK computes on the client (``getCurrentStepIndex`` falls back to the first visible step,
``step.start()`` returns early on the current, started step) is applied here to the raw replies."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.models import StatefulFlow, UserFlowStates
from frigade.rules import Action
from tests.emulator._http import FLOW, STEPS, read, send

STEP_1, STEP_2 = STEPS[0], STEPS[1]


def flow_of(states: UserFlowStates) -> StatefulFlow:
    found = states.flow(FLOW)
    assert found is not None
    return found


def sdk_current_step_index(flow: StatefulFlow) -> int:
    """flow.ts getCurrentStepIndex(): the index of currentStepId, else of the first visible step."""
    ids = [s.id for s in flow.data.steps]
    current = flow.state.current_step_id
    if current in ids:
        return ids.index(current)
    return next(i for i, s in enumerate(flow.data.steps) if s.state.visible)


def step(flow: StatefulFlow, step_id: str) -> tuple[bool, bool]:
    s = next(x for x in flow.data.steps if x.id == step_id)
    return s.state.started, s.state.completed


def test_read_and_set_flow_state(client: httpx.Client) -> None:
    """frigade.int.test.ts, 'read and set flow state': flow.complete() completes a fresh flow."""
    assert flow_of(read(client, "u-read-set")).state.completed is False
    assert flow_of(send(client, "u-read-set", Action.COMPLETED_FLOW)).state.completed is True


def test_read_and_set_flow_step_state(client: httpx.Client) -> None:
    """frigade.int.test.ts, 'read and set flow step state'."""
    user = "u-step-state"
    flow = flow_of(read(client, user))
    assert sdk_current_step_index(flow) == 0
    assert step(flow, STEP_1) == (False, False)
    flow = flow_of(send(client, user, Action.STARTED_STEP, STEP_1))
    assert sdk_current_step_index(flow) == 0
    assert step(flow, STEP_1)[0] is True
    flow = flow_of(send(client, user, Action.COMPLETED_STEP, STEP_1))
    assert sdk_current_step_index(flow) == 1
    assert step(flow, STEP_1)[1] is True
    flow = flow_of(send(client, user, Action.NOT_STARTED_STEP, STEP_1))  # step.reset()
    assert step(flow, STEP_1) == (False, False)


def test_navigates_back_and_forth_in_a_flow(client: httpx.Client) -> None:
    """frigade.int.test.ts, 'navigates back and forth in a flow' (forward()/back() send STARTED_STEP of
    the next/previous step; a page refresh is a new read)."""
    user = "u-nav"
    flow = flow_of(send(client, user, Action.STARTED_FLOW))
    assert flow.state.started is True
    assert sdk_current_step_index(flow) == 0
    assert step(flow, STEP_1) == (False, False)
    flow = flow_of(send(client, user, Action.STARTED_STEP, STEP_2))  # forward
    assert sdk_current_step_index(flow) == 1
    assert step(flow, STEP_2) == (True, False)
    flow = flow_of(send(client, user, Action.STARTED_STEP, STEP_1))  # back
    assert sdk_current_step_index(flow) == 0
    assert step(flow, STEP_1) == (True, False)
    send(client, user, Action.STARTED_STEP, STEP_2)  # forward
    assert sdk_current_step_index(flow_of(read(client, user))) == 1  # refresh
    send(client, user, Action.STARTED_STEP, STEP_1)  # back
    flow = flow_of(send(client, user, Action.COMPLETED_STEP, STEP_1))  # getStepByIndex(0).complete()
    assert flow.state.completed is False
    assert sdk_current_step_index(flow) == 1
    # complete() then fires STARTED_STEP for the refreshed current step (step 2), and back() goes to 0
    send(client, user, Action.STARTED_STEP, STEP_2)
    flow = flow_of(send(client, user, Action.STARTED_STEP, STEP_1))
    assert sdk_current_step_index(flow) == 0
    assert sdk_current_step_index(flow_of(read(client, user))) == 0  # refresh


def test_restart_a_flow(client: httpx.Client) -> None:
    """frigade.int.test.ts, 'restart a flow' (after identify: the user is in the audience)."""
    user = "u-restart"
    flow = flow_of(read(client, user))
    assert flow.state.visible is True
    assert step(flow, STEP_1)[0] is False
    assert step(flow_of(send(client, user, Action.STARTED_STEP, STEP_1)), STEP_1)[0] is True
    flow = flow_of(send(client, user, Action.COMPLETED_FLOW))
    assert flow.state.completed is True
    assert flow.state.visible is False
    flow = flow_of(send(client, user, Action.NOT_STARTED_FLOW))
    assert flow.state.completed is False
    assert flow.state.visible is True


@pytest.fixture(scope="module")
def targeted_emulator() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(audiences={FLOW: ("identified-*",)}) as emu:
        yield emu


def test_restart_a_flow_outside_the_audience_is_present_but_not_visible(targeted_emulator: EmbeddedEmulator) -> None:
    """frigade.int.test.ts, 'restart a flow': before identify, ``expect(flow.isVisible).toBeFalsy()``
    on a flow that is there; the user matching the audience sees it (``toBeTruthy()``)."""
    with targeted_emulator.client() as client:
        outside = flow_of(read(client, "guest-1"))
        assert outside.state.visible is False
        assert outside.state.completed is False
        assert flow_of(read(client, "identified-1")).state.visible is True


def test_step_start_after_completing_the_previous_step_fires_once(client: httpx.Client, emu: EmbeddedEmulator) -> None:
    """frigade.int.test.ts, "on() event handler for step.start": step 1 completed, then step2.start()
    fires step 2's start exactly once. The reply to COMPLETED_STEP already shows step 2 started and
    current, so start() returns early, and a STARTED_STEP sent anyway changes nothing."""
    user = "u-step-start"
    send(client, user, Action.STARTED_STEP, STEP_1)
    flow = flow_of(send(client, user, Action.COMPLETED_STEP, STEP_1))
    assert step(flow, STEP_2) == (True, False)
    assert flow.state.current_step_id == STEP_2
    before = emu.stats()["writes_unchanged"]
    send(client, user, Action.STARTED_STEP, STEP_2)
    assert emu.stats()["writes_unchanged"] == before + 1


def test_steps_completion_then_restart_and_complete_again(client: httpx.Client) -> None:
    """frigade.int.test.ts, 'on() event handler for steps completion should fire expected number of
    times': complete step 1 and the flow; a new instance sees it completed; restart clears step 1;
    completing it again completes it."""
    user = "u-completion"
    assert step(flow_of(send(client, user, Action.COMPLETED_STEP, STEP_1)), STEP_1)[1] is True
    send(client, user, Action.COMPLETED_FLOW)
    assert flow_of(read(client, user)).state.completed is True
    assert step(flow_of(send(client, user, Action.NOT_STARTED_FLOW)), STEP_1)[1] is False
    assert step(flow_of(send(client, user, Action.COMPLETED_STEP, STEP_1)), STEP_1)[1] is True


def test_flow_skip(client: httpx.Client) -> None:
    """frigade.int.test.ts, 'on() event handler for flow.skip': flow.skip() skips it."""
    flow = flow_of(send(client, "u-skip", Action.SKIPPED_FLOW))
    assert flow.state.skipped is True
    assert flow.state.visible is False


def test_non_branching_complete_reply_starts_the_next_step(client: httpx.Client) -> None:
    """flow-branching-visibility.test.ts, 'non-branching flow: STARTED_STEP for the next step is still
    fired after complete': the server's reply to COMPLETED_STEP step-1 has step-1 completed and
    started, step-2 started, currentStepIndex 1 and the flow started."""
    flow = flow_of(send(client, "u-branching", Action.COMPLETED_STEP, STEP_1))
    assert step(flow, STEP_1) == (True, True)
    assert step(flow, STEP_2) == (True, False)
    assert flow.state.current_step_index == 1
    assert flow.state.started is True
