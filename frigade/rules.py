"""The flow-state rules: the single implementation that the emulator and the planner share.

Semantics follow Frigade's API documentation (README, "Rules profiles"). Where Frigade's SDK and the older
reading of the rules differ, or Frigade publishes nothing, the behaviour is a setting of a named ``Rules`` profile (see
``PROFILES``); every caller passes the profile it plays, so the planner, the replay, the reconciler and
the emulator cannot drift apart. Fixed choices:
- A flow is "started" by any step action except NOT_STARTED_STEP, and by STARTED_FLOW / COMPLETED_FLOW.
- NOT_STARTED_FLOW resets every step fully (skipped included) and the flow's own flags.
- ``last_action_at`` is the createdAt of the latest write applied to the flow (any action) or to the
  step (actions naming that step); a reset clears the steps' times.
- ``visible`` here is false exactly while the flow is completed or skipped: what a server without
  targeting shows. Real visibility is targeting, which no write sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from frigade.documents import DocumentError, load_mapping


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


class ProfileError(ValueError):
    """A rules profile name or file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Rules:
    """A reading of Frigade's flow-state rules: the behaviours its SDK and our older model disagree
    on, or that nothing published settles. The defaults are what Frigade's SDK shows."""

    name: str = "sdk"
    #: COMPLETED_STEP / SKIPPED_STEP on step k also marks step k+1 started (flow.ts optimistic state)
    start_next_step: bool = True
    #: currentStepIndex of a flow that is not started (-1 in an SDK fixture, 0 in its mock helper)
    not_started_index: int = -1
    #: NOT_STARTED_STEP clears the step's lastActionAt (flow.ts's reset() does so optimistically)
    nss_clears_last_action: bool = True
    #: a write's createdAt, even back-dated, becomes lastActionAt (else the server's own time)
    honours_created_at: bool = True
    #: COMPLETED_STEP on the flow's last step completes the flow (the SDK sends COMPLETED_FLOW itself)
    last_step_completes_flow: bool = False

    def __post_init__(self) -> None:
        if self.not_started_index not in (-1, 0):
            raise ProfileError(f"not_started_index must be -1 or 0, not {self.not_started_index!r}")

    def settings(self) -> dict[str, Any]:
        """The behaviours alone (no name): what a probe measures and a profile file holds."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def named(self) -> Rules:
        """The same behaviours under the name of the built-in profile that has them, if one does."""
        for profile in PROFILES.values():
            if profile.settings() == self.settings():
                return profile
        return self


#: setting -> what it means (README lists these)
SETTINGS: dict[str, str] = {
    "start_next_step": "completing or skipping step k marks step k+1 started",
    "not_started_index": "currentStepIndex of a flow that is not started (-1 or 0)",
    "nss_clears_last_action": "NOT_STARTED_STEP clears the step's lastActionAt",
    "honours_created_at": "a back-dated createdAt becomes lastActionAt",
    "last_step_completes_flow": "COMPLETED_STEP on the last step completes the flow",
}
PROFILES: dict[str, Rules] = {
    "sdk": Rules(),
    # the model this project had before following the SDK's live-tested behaviour
    "legacy": Rules(name="legacy", start_next_step=False, nss_clears_last_action=False),
}
DEFAULT_RULES = PROFILES["sdk"]


def rules_from_mapping(doc: Mapping[str, Any], where: str = "rules") -> Rules:
    known = {f.name for f in fields(Rules)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ProfileError(f"{where}: unknown rules setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    base = DEFAULT_RULES
    values: dict[str, Any] = {}
    for name, value in doc.items():
        if name == "name":
            values[name] = str(value)
            continue
        expected = type(getattr(base, name))
        if type(value) is not expected:
            raise ProfileError(f"{where}: {name} must be {expected.__name__}, not {value!r}")
        values[name] = value
    values.setdefault("name", "custom")
    return replace(base, **values)


def load_rules(spec: str | None) -> Rules:
    """A built-in profile by name, or a JSON/YAML file of settings (what ``probe`` writes)."""
    if spec is None or spec == "":
        return DEFAULT_RULES
    if spec in PROFILES:
        return PROFILES[spec]
    path = Path(spec)
    if not path.is_file():
        raise ProfileError(f"--rules {spec!r} is neither a profile ({', '.join(PROFILES)}) nor a file")
    try:
        doc = load_mapping(path, "a rules file: a mapping of setting: value")
    except DocumentError as exc:
        raise ProfileError(str(exc)) from exc
    return rules_from_mapping(doc, spec)


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


def initial_state(step_ids: Sequence[str], rules: Rules = DEFAULT_RULES) -> FlowState:
    return FlowState(step_ids=tuple(step_ids), current_step_index=rules.not_started_index)


def _next_index(state: FlowState, idx: int) -> int:
    return min(idx + 1, len(state.step_ids) - 1)


def apply(
    state: FlowState,
    action: Action,
    step_id: str | None = None,
    at: str | None = None,
    rules: Rules = DEFAULT_RULES,
) -> FlowState:
    """Return the state after one write. Raises RuleError for a write Frigade would reject."""
    if action.is_step:
        if step_id is None:
            raise RuleError(f"{action.value} needs a stepId")
        if step_id not in state.step_ids:
            raise RuleError(f"unknown stepId {step_id!r}")
        return _apply_step(state, action, state.step_ids.index(step_id), at, rules)
    if step_id is not None:
        raise RuleError(f"{action.value} takes no stepId")
    return _apply_flow(state, action, at, rules)


def _apply_step(state: FlowState, action: Action, idx: int, at: str | None, rules: Rules) -> FlowState:
    old = state.steps[idx]
    pointer = state.current_step_index
    completed = state.completed
    if action is Action.NOT_STARTED_STEP:
        step_at = None if rules.nss_clears_last_action else at
        new = replace(old, started=False, completed=False, last_action_at=step_at)
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
    steps = [*state.steps[:idx], new, *state.steps[idx + 1 :]]
    done = action in (Action.COMPLETED_STEP, Action.SKIPPED_STEP)
    if done and rules.start_next_step and idx + 1 < len(steps):
        steps[idx + 1] = replace(steps[idx + 1], started=True)
    if action is Action.COMPLETED_STEP and rules.last_step_completes_flow and idx == len(steps) - 1:
        completed = True
    return replace(
        state,
        steps=tuple(steps),
        started=started,
        completed=completed,
        current_step_index=pointer,
        last_action_at=at,
    )


def _apply_flow(state: FlowState, action: Action, at: str | None, rules: Rules) -> FlowState:
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
    return replace(initial_state(state.step_ids, rules), last_action_at=at)


def replay(
    step_ids: Sequence[str],
    actions: Iterable[tuple[Action, str | None, str | None]],
    start: FlowState | None = None,
    rules: Rules = DEFAULT_RULES,
) -> FlowState:
    """Apply (action, step_id, at) triples in order, from ``start`` or the initial state."""
    state = start if start is not None else initial_state(step_ids, rules)
    for action, step_id, at in actions:
        state = apply(state, action, step_id, at, rules)
    return state


def differing_settings(
    before: FlowState, action: Action, step_id: str | None, got: FlowState, rules: Rules
) -> list[str]:
    """The settings of ``rules`` that, flipped one at a time, predict ``got`` after the write: which
    rule the server plays differently. Empty when no single setting explains it."""
    out = []
    for name in SETTINGS:
        value = getattr(rules, name)
        flipped: Any = (0 if value == -1 else -1) if name == "not_started_index" else not value
        other = replace(rules, **{name: flipped})
        start = before
        if not before.started and before.current_step_index == rules.not_started_index:
            start = replace(before, current_step_index=other.not_started_index)
        try:
            if apply(start, action, step_id, None, other).logical() == got.logical():
                out.append(name)
        except RuleError:
            continue
    return out
