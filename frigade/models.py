"""Wire models: the only place Frigade's camelCase field names live."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from frigade.rules import Action, FlowState, StepState


class _Wire(BaseModel):
    # Fields this client never reads are not modelled, and unknown ones are ignored: an answer carries
    # every eligible flow with its step content (and, to a private key, every flowResponse so far),
    # and parsing it is the largest part of the client's CPU per write.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class FlowStateWrite(_Wire):
    """Body of ``POST /v1/public/flowStates`` in its write form."""

    user_id: str = Field(min_length=1)
    flow_slug: str = Field(min_length=1)
    action_type: Action
    step_id: str | None = None
    group_id: str | None = None
    data: dict[str, Any] | None = None
    created_at: str | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StepStateWire(_Wire):
    completed: bool
    skipped: bool
    started: bool
    visible: bool = True
    blocked: bool = False
    last_action_at: str | None = None


class FlowStateWire(_Wire):
    current_step_id: str | None = None
    current_step_index: int
    completed: bool
    started: bool
    skipped: bool
    visible: bool
    last_action_at: str | None = None


class StatefulStep(_Wire):
    id: str
    state: StepStateWire = Field(alias="$state")


class StatefulFlowData(_Wire):
    steps: list[StatefulStep] = Field(default_factory=list)


class StatefulFlow(_Wire):
    flow_slug: str
    flow_name: str | None = None
    flow_type: str | None = None
    version: int = 1
    data: StatefulFlowData
    state: FlowStateWire = Field(alias="$state")


class UserFlowStates(_Wire):
    """Response of the flowStates endpoints: every eligible flow, recomputed."""

    eligible_flows: list[StatefulFlow] = Field(default_factory=list)
    ineligible_flows: list[str] = Field(default_factory=list)

    def flow(self, slug: str) -> StatefulFlow | None:
        return next((f for f in self.eligible_flows if f.flow_slug == slug), None)


def flow_state_from_wire(flow: StatefulFlow) -> FlowState:
    """Turn a returned flow into the rules' state, to compare with a replayed one."""
    steps = tuple(
        StepState(
            started=s.state.started,
            completed=s.state.completed,
            skipped=s.state.skipped,
            last_action_at=s.state.last_action_at,
        )
        for s in flow.data.steps
    )
    st = flow.state
    return FlowState(
        step_ids=tuple(s.id for s in flow.data.steps),
        started=st.started,
        completed=st.completed,
        skipped=st.skipped,
        current_step_index=st.current_step_index,
        last_action_at=st.last_action_at,
        steps=steps,
    )


class ErrorBody(_Wire):
    status_code: int
    message: str | list[str]
    error: str | None = None

    def text(self) -> str:
        return "; ".join(self.message) if isinstance(self.message, list) else self.message


class ExternalizedFlow(_Wire):
    """One entry of ``GET /v1/public/flows``; ``data`` is the flow config as a YAML or JSON string."""

    slug: str
    name: str | None = None
    type: str | None = None
    version: int = 1
    status: str = "ACTIVE"
    data: str = ""


class FlowList(_Wire):
    data: list[ExternalizedFlow]
    offset: int = 0
    limit: int = 0


def same_instant(a: str | None, b: str | None) -> bool:
    """Two ISO-8601 times name the same instant to the millisecond (the precision sent on the wire); a
    time without zone is UTC, as the API sends and expects. Two missing times are the same (no action
    yet), one missing is not; text that is not a time equals only itself."""
    if a is None or b is None:
        return a is b
    if a == b:
        return True
    try:
        x, y = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (a, b))
    except ValueError:
        return False
    x, y = (t if t.tzinfo is not None else t.replace(tzinfo=UTC) for t in (x, y))
    return abs((x - y).total_seconds()) < 0.001
