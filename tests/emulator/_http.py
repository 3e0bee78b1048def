"""Small helpers shared by the emulator tests: send a write, read a state, compare with the rules."""

from __future__ import annotations

from typing import Any

import httpx

from frigade.models import FlowStateWrite, UserFlowStates, flow_state_from_wire
from frigade.rules import Action, FlowState

FLOW = "flow_onboarding"
STEPS = ("connect-data", "invite-team", "create-dashboard", "set-alerts")
ACTIVE_FLOWS = ("flow_onboarding", "flow_welcome_tour", "flow_announcement")
STATES = "/v1/public/flowStates"


def write_body(
    user: str, action: Action | str, step: str | None = None, *, flow: str = FLOW, at: str | None = None
) -> dict[str, Any]:
    return FlowStateWrite(user_id=user, flow_slug=flow, action_type=Action(action), step_id=step, created_at=at).body()


def send(
    client: httpx.Client,
    user: str,
    action: Action | str,
    step: str | None = None,
    *,
    flow: str = FLOW,
    at: str | None = None,
) -> UserFlowStates:
    answer = client.post(STATES, json=write_body(user, action, step, flow=flow, at=at))
    assert answer.status_code == 201, answer.text
    return UserFlowStates.model_validate(answer.json())


def read(client: httpx.Client, user: str) -> UserFlowStates:
    answer = client.get(STATES, params={"userId": user})
    assert answer.status_code == 200, answer.text
    return UserFlowStates.model_validate(answer.json())


def state_of(states: UserFlowStates, flow: str = FLOW) -> FlowState:
    found = states.flow(flow)
    assert found is not None, f"{flow} missing from the response"
    return flow_state_from_wire(found)


def error_body(answer: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()
    return body
