"""The flow-state rules: the single implementation that the emulator and the planner share.

Semantics follow ``shared/frigade-api.md``. Choices where Frigade publishes nothing:
- A flow is "started" by any step action except NOT_STARTED_STEP, and by STARTED_FLOW / COMPLETED_FLOW.
- NOT_STARTED_FLOW resets every step fully (skipped included) and the flow's own flags.
- ``last_action_at`` is the createdAt of the latest write applied to the flow (any action) or to the
  step (actions naming that step); a reset clears the steps' times.
- ``visible`` is false exactly while the flow is completed or skipped (only NOT_STARTED_FLOW clears those).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum


class Action(StrEnum):
    STARTED_STEP = "STARTED_STEP"
    COMPLETED_STEP = "COMPLETED_STEP"
    SKIPPED_STEP = "SKIPPED_STEP"
    NOT_STARTED_STEP = "NOT_STARTED_STEP"
    STARTED_FLOW = "STARTED_FLOW"
    COMPLETED_FLOW = "COMPLETED_FLOW"
    SKIPPED_FLOW = "SKIPPED_FLOW"
    NOT_STARTED_FLOW = "NOT_STARTED_FLOW"

    @property
    def is_step(self) -> bool:
        return self.value.endswith("_STEP")


STEP_ACTIONS = frozenset(a for a in Action if a.is_step)
FLOW_ACTIONS = frozenset(a for a in Action if not a.is_step)


class RuleError(ValueError):
    """An action that cannot apply to this flow (unknown step, step missing or misplaced)."""


@dataclass(frozen=True, slots=True)
class StepState:
    started: bool = False
    completed: bool = False
    skipped: bool = False
    last_action_at: str | None = None

    def logical(self) -> tuple[bool, bool, bool]:
        return (self.started, self.completed, self.skipped)


@dataclass(frozen=True, slots=True)
class FlowState:
    """One user's state in one flow. ``steps`` follows the flow's step order."""

    step_ids: tuple[str, ...]
    started: bool = False
    completed: bool = False
    skipped: bool = False
    current_step_index: int = -1
    last_action_at: str | None = None
    steps: tuple[StepState, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.steps:
            object.__setattr__(self, "steps", tuple(StepState() for _ in self.step_ids))

    @property
    def visible(self) -> bool:
        return not (self.completed or self.skipped)

    @property
    def current_step_id(self) -> str | None:
        if not self.step_ids:
            return None
        return self.step_ids[max(self.current_step_index, 0)]

    def step(self, step_id: str) -> StepState:
        return self.steps[self.step_ids.index(step_id)]

    def logical(self) -> tuple[object, ...]:
        """Everything but the timestamps: what decides whether a write 'changed nothing'."""
        return (
            self.started,
            self.completed,
            self.skipped,
            self.current_step_index,
            tuple(s.logical() for s in self.steps),
        )


def initial_state(step_ids: Sequence[str]) -> FlowState:
    return FlowState(step_ids=tuple(step_ids))


def _next_index(state: FlowState, idx: int) -> int:
    return min(idx + 1, len(state.step_ids) - 1)


def apply(state: FlowState, action: Action, step_id: str | None = None, at: str | None = None) -> FlowState:
    """Return the state after one write. Raises RuleError for a write Frigade would reject."""
    if action.is_step:
        if step_id is None:
            raise RuleError(f"{action.value} needs a stepId")
        if step_id not in state.step_ids:
            raise RuleError(f"unknown stepId {step_id!r}")
        return _apply_step(state, action, state.step_ids.index(step_id), at)
    if step_id is not None:
        raise RuleError(f"{action.value} takes no stepId")
    return _apply_flow(state, action, at)


def _apply_step(state: FlowState, action: Action, idx: int, at: str | None) -> FlowState:
    old = state.steps[idx]
    pointer = state.current_step_index
    if action is Action.NOT_STARTED_STEP:
        new = replace(old, started=False, completed=False, last_action_at=at)
        started = state.started
    elif action is Action.STARTED_STEP:
        new = replace(old, started=True, last_action_at=at)
        pointer, started = idx, True
    elif action is Action.COMPLETED_STEP:
        new = replace(old, started=True, completed=True, last_action_at=at)
        pointer, started = _next_index(state, idx), True
    else:  # SKIPPED_STEP
        new = replace(old, started=True, skipped=True, last_action_at=at)
        pointer, started = _next_index(state, idx), True
    steps = (*state.steps[:idx], new, *state.steps[idx + 1 :])
    return replace(state, steps=steps, started=started, current_step_index=pointer, last_action_at=at)


def _apply_flow(state: FlowState, action: Action, at: str | None) -> FlowState:
    first = 0 if state.current_step_index < 0 else state.current_step_index
    if action is Action.STARTED_FLOW:
        if state.started or state.completed:
            return replace(state, last_action_at=at)
        return replace(state, started=True, current_step_index=first, last_action_at=at)
    if action is Action.COMPLETED_FLOW:
        return replace(state, started=True, completed=True, current_step_index=first, last_action_at=at)
    if action is Action.SKIPPED_FLOW:
        return replace(state, skipped=True, last_action_at=at)
    # NOT_STARTED_FLOW
    return replace(initial_state(state.step_ids), last_action_at=at)


def replay(
    step_ids: Sequence[str],
    actions: Iterable[tuple[Action, str | None, str | None]],
    start: FlowState | None = None,
) -> FlowState:
    """Apply (action, step_id, at) triples in order, from ``start`` or the initial state."""
    state = start if start is not None else initial_state(step_ids)
    for action, step_id, at in actions:
        state = apply(state, action, step_id, at)
    return state
