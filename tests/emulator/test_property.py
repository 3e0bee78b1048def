"""The emulator and the local replay agree on random action sequences (the design's "one rule set")."""

from __future__ import annotations

import uuid

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.embedded import EmbeddedEmulator
from frigade.models import UserFlowStates, flow_state_from_wire
from frigade.rules import Action, FlowState, initial_state, replay
from tests.emulator._http import send

FLOWS = {
    "flow_onboarding": ("connect-data", "invite-team", "create-dashboard", "set-alerts"),
    "flow_welcome_tour": ("welcome", "sidebar", "search"),
}

Write = tuple[str, Action, str | None]


@st.composite
def writes(draw: st.DrawFn) -> Write:
    flow = draw(st.sampled_from(sorted(FLOWS)))
    action = draw(st.sampled_from(list(Action)))
    step = draw(st.sampled_from(FLOWS[flow])) if action.is_step else None
    return flow, action, step


def _flows(states: UserFlowStates) -> dict[str, FlowState]:
    return {f.flow_slug: flow_state_from_wire(f) for f in states.eligible_flows if f.flow_slug in FLOWS}


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(writes(), min_size=1, max_size=8))
def test_every_answer_equals_the_local_replay(shared_emulator: EmbeddedEmulator, sequence: list[Write]) -> None:
    user = f"prop-{uuid.uuid4()}"  # a fresh user per example instead of resetting the shared process
    sent: dict[str, list[tuple[Action, str | None, str | None]]] = {slug: [] for slug in FLOWS}
    with httpx.Client(base_url=shared_emulator.url, headers=shared_emulator.headers(private=False)) as client:
        for i, (flow, action, step) in enumerate(sequence):
            at = f"2024-05-01T00:00:{i:02d}.000Z"
            sent[flow].append((action, step, at))
            got = _flows(send(client, user, action, step, flow=flow, at=at))
            expected = {slug: replay(steps, sent[slug]) for slug, steps in FLOWS.items()}
            assert got == expected
    history = shared_emulator.history(user)
    assert [(h["flowSlug"], h["actionType"], h["stepId"]) for h in history] == [
        (flow, action.value, step) for flow, action, step in sequence
    ]
    changed = []
    state = {slug: initial_state(steps) for slug, steps in FLOWS.items()}
    for h in history:
        before = state[h["flowSlug"]]
        state[h["flowSlug"]] = replay(
            FLOWS[h["flowSlug"]], [(Action(h["actionType"]), h["stepId"], h["createdAt"])], before
        )
        changed.append(before.logical() != state[h["flowSlug"]].logical())
    assert [h["changed"] for h in history] == changed
