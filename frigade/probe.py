"""The probe: a short scripted sequence on one dedicated user that tells the rules profiles apart.

On a flow with at least two steps s0 .. sN, for a user who has never been seen:
1. read            -> currentStepIndex of a flow not started (``not_started_index``)
2. COMPLETED_STEP s0, back-dated -> s1 started? (``start_next_step``); flow lastActionAt is the
                                    back-dated time? (``honours_created_at``)
3. NOT_STARTED_STEP s0           -> s0's lastActionAt cleared? (``nss_clears_last_action``)
4. COMPLETED_STEP sN             -> flow completed? (``last_step_completes_flow``)
5. NOT_STARTED_FLOW              -> the probe user is reset
Five requests, one monthly active user, and that flow's webhooks for the writes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from frigade.client import FrigadeClient
from frigade.errors import FrigadeError
from frigade.models import FlowStateWrite, StatefulFlow, UserFlowStates, same_instant
from frigade.rules import Action, Rules

__all__ = ["PROBE_PREFIX", "ProbeAnswers", "ProbeError", "ProbeResult", "interpret", "probe", "probe_user_id"]

PROBE_PREFIX = "frigade-migrate-probe-"
#: back-dated times no live write can carry, so that honouring them is unmistakable
_T_COMPLETE = "2001-02-03T04:05:06.789Z"
_T_RESET_STEP = "2001-02-03T04:05:07.789Z"
_T_LAST = "2001-02-03T04:05:08.789Z"
#: requests the probe sends (one read, four writes)
PROBE_REQUESTS = 5


class ProbeError(FrigadeError):
    """The probe cannot run on this flow, or the server's answers fit no reading of the rules."""


def probe_user_id() -> str:
    return PROBE_PREFIX + secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class ProbeAnswers:
    """What the server showed at each point of the sequence."""

    not_started_index: int
    next_started_after_complete: bool
    flow_last_action_at_after_complete: str | None
    step_last_action_at_after_reset: str | None
    flow_completed_after_last_step: bool


def interpret(answers: ProbeAnswers) -> Rules:
    """The profile the answers show (named after the built-in profile it equals, if any)."""
    if answers.not_started_index not in (-1, 0):
        raise ProbeError(
            f"a flow not started shows currentStepIndex {answers.not_started_index}: no profile has that "
            "(expected -1 or 0)"
        )
    rules = Rules(
        name="probed",
        start_next_step=answers.next_started_after_complete,
        not_started_index=answers.not_started_index,
        nss_clears_last_action=answers.step_last_action_at_after_reset is None,
        honours_created_at=same_instant(answers.flow_last_action_at_after_complete, _T_COMPLETE),
        last_step_completes_flow=answers.flow_completed_after_last_step,
    )
    return rules.named()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    user_id: str
    flow_slug: str
    answers: ProbeAnswers
    rules: Rules
    requests: int


async def probe(client: FrigadeClient, flow_slug: str, user_id: str) -> ProbeResult:
    """Run the sequence on ``user_id`` in ``flow_slug`` and reset the user at the end (also when an
    answer is unusable, once anything was written)."""
    first = _flow(await client.read_state(user_id), flow_slug)
    steps = [s.id for s in first.data.steps]
    if len(steps) < 2:
        raise ProbeError(f"flow {flow_slug} has {len(steps)} step(s): the probe needs a flow with at least two")
    if first.state.started or first.state.completed or first.state.skipped:
        raise ProbeError(f"probe user {user_id} already has state in {flow_slug}: use a fresh probe user")
    sent = 1
    try:
        # counted before each write: one that fails may still have taken effect, and is reset too
        sent += 1
        after_complete = await _write(client, user_id, flow_slug, Action.COMPLETED_STEP, steps[0], _T_COMPLETE)
        sent += 1
        after_reset = await _write(client, user_id, flow_slug, Action.NOT_STARTED_STEP, steps[0], _T_RESET_STEP)
        sent += 1
        after_last = await _write(client, user_id, flow_slug, Action.COMPLETED_STEP, steps[-1], _T_LAST)
    finally:
        if sent > 1:
            await _write(client, user_id, flow_slug, Action.NOT_STARTED_FLOW, None, None)
            sent += 1
    answers = ProbeAnswers(
        not_started_index=first.state.current_step_index,
        next_started_after_complete=after_complete.data.steps[1].state.started,
        flow_last_action_at_after_complete=after_complete.state.last_action_at,
        step_last_action_at_after_reset=after_reset.data.steps[0].state.last_action_at,
        flow_completed_after_last_step=after_last.state.completed,
    )
    return ProbeResult(user_id, flow_slug, answers, interpret(answers), sent)


async def _write(
    client: FrigadeClient, user_id: str, flow_slug: str, action: Action, step_id: str | None, at: str | None
) -> StatefulFlow:
    write = FlowStateWrite(user_id=user_id, flow_slug=flow_slug, action_type=action, step_id=step_id, created_at=at)
    result = await client.write(write, before=None, after=None)
    if not result.ok or result.state is None:
        raise ProbeError(f"{action.value} on the probe user failed: {result.error_class}: {result.message}")
    return _flow(result.state, flow_slug)


def _flow(states: UserFlowStates, flow_slug: str) -> StatefulFlow:
    flow = states.flow(flow_slug)
    if flow is None:
        raise ProbeError(f"flow {flow_slug} is not among the probe user's eligible flows")
    return flow
