"""Resume alignment: which of a user's pending requests the state read back shows already applied.

Beside the rules because it is their question asked backwards: replay the plan from the start state
and find the one point whose state is the one the server holds.
"""

from __future__ import annotations

from collections.abc import Mapping

from frigade.models import UserFlowStates, flow_state_from_wire, same_instant
from frigade.push import PlannedRequest
from frigade.rules import DEFAULT_RULES, FlowState, Rules, apply


def align(
    requests: list[PlannedRequest],
    full_plan: list[PlannedRequest],
    start: Mapping[str, FlowState],
    read_back: UserFlowStates,
    rules: Rules = DEFAULT_RULES,
) -> tuple[list[PlannedRequest], list[PlannedRequest], dict[str, FlowState]]:
    """Split a user's pending requests into (already applied, still to send) by matching the state read
    back against the state expected after each planned request. A flow whose read-back state matches
    no point of its plan is left out of both: it diverged, and is reported as a conflict."""
    applied: list[PlannedRequest] = []
    to_send: list[PlannedRequest] = []
    new_start: dict[str, FlowState] = {}
    for flow in sorted({r.flow_slug for r in requests}):
        wire = read_back.flow(flow)
        if wire is None or flow not in start:
            continue
        now = flow_state_from_wire(wire)
        state = start[flow]
        trail: list[tuple[FlowState, int, str | None]] = [(state, -1, None)]
        for r in (x for x in full_plan if x.flow_slug == flow):
            state = apply(state, r.action, r.step_id, r.created_at, rules)
            trail.append((state, r.seq, r.created_at))
        pending = [r for r in requests if r.flow_slug == flow]
        first_pending = pending[0].seq
        candidates = [(seq, at) for s, seq, at in trail if seq >= first_pending - 1 and s.logical() == now.logical()]
        if len(candidates) > 1:
            # The same state at several points of the plan (history mode): the flow's lastActionAt
            # says which request was the last to land.
            candidates = [
                (seq, at) for seq, at in candidates if at is not None and same_instant(at, now.last_action_at)
            ]
        if len(candidates) != 1:
            continue
        reached = candidates[0][0]
        applied += [r for r in pending if r.seq <= reached]
        to_send += [r for r in pending if r.seq > reached]
        new_start[flow] = flow_state_from_wire(wire)
    return applied, to_send, new_start
