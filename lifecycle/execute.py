"""Push execution: plan rows -> ordered per-user work -> Frigade, with resume that never resends.

Resume rules: a request with a recorded outcome of sent / resolved_applied / rejected is done, and
so is one held behind a rejection. For the rest, users the previous attempt may have dispatched (up
to its durable reservation in dispatch.json) have their state read back first, and their pending
requests are aligned with it: requests whose effect the server already shows are skipped, never
resent; a state that matches no single point of the plan is a conflict, reported, not guessed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from frigade.catalog import Catalog
from frigade.client import FrigadeClient
from frigade.errors import FrigadeError, StopRunError
from frigade.models import UserFlowStates, flow_state_from_wire, same_instant
from frigade.push import FirstUsers, Outcome, OutcomeKind, PlannedRequest, PushSummary, UserWork, push
from frigade.rules import DEFAULT_RULES, FlowState, Rules, StepState, apply
from lifecycle.pipeline import iter_user_requests, request_body_fields
from lifecycle.runfolder import DispatchJournal, OutcomeLog

DONE_OUTCOMES = ("sent", "resolved_applied", "rejected", "already_in_effect")

SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "flow_started": pl.Boolean(),
    "flow_completed": pl.Boolean(),
    "flow_skipped": pl.Boolean(),
    "flow_visible": pl.Boolean(),
    "current_step_index": pl.Int64(),
    "current_step_id": pl.String(),
    "flow_last_action_at": pl.String(),
    "step_id": pl.String(),
    "step_index": pl.Int64(),
    "step_started": pl.Boolean(),
    "step_completed": pl.Boolean(),
    "step_skipped": pl.Boolean(),
    "step_last_action_at": pl.String(),
    "captured_at": pl.Float64(),
}


def flow_states(flows: pl.DataFrame, steps: pl.DataFrame, catalog: Catalog) -> dict[tuple[str, str], FlowState]:
    """Remembered-state frames as rules states (for the few user-flows a push needs them for)."""
    by_flow: dict[tuple[str, str], dict[str, StepState]] = {}
    for r in steps.iter_rows(named=True):
        by_flow.setdefault((r["user_id"], r["flow_slug"]), {})[r["step_id"]] = StepState(
            started=r["step_started"], completed=r["step_completed"], skipped=r["step_skipped"]
        )
    out: dict[tuple[str, str], FlowState] = {}
    for r in flows.iter_rows(named=True):
        flow = catalog.get(r["flow_slug"])
        if flow is None:
            continue
        key = (r["user_id"], r["flow_slug"])
        got = by_flow.get(key, {})
        out[key] = FlowState(
            step_ids=flow.step_ids,
            started=r["started"],
            completed=r["completed"],
            skipped=r["skipped"],
            current_step_index=r["current_step_index"],
            steps=tuple(got.get(s, StepState()) for s in flow.step_ids),
        )
    return out


def pending_requests(plan: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """Plan rows with no outcome that settles them (a failed one is tried again)."""
    if outcomes.is_empty():
        return plan
    # Held behind a rejection stays held; held behind a failure (gave up, conflict) is tried again.
    rejected = outcomes.filter(pl.col("outcome") == "rejected").select("user_id", "flow_slug").unique()
    held = outcomes.filter(pl.col("outcome") == "held").join(rejected, on=["user_id", "flow_slug"], how="semi")
    done = pl.concat(
        [outcomes.filter(pl.col("outcome").is_in(DONE_OUTCOMES)).select("request_id"), held.select("request_id")]
    ).unique()
    # plan order: dispatch and its journal follow it, so a resume must not reorder the users
    return plan.join(done, on="request_id", how="anti", maintain_order="left")


def snapshot_rows(user_id: str, states: UserFlowStates, at: float) -> list[dict[str, Any]]:
    rows = []
    for flow in states.eligible_flows:
        fs = flow.state
        base = {
            "user_id": user_id,
            "flow_slug": flow.flow_slug,
            "flow_started": fs.started,
            "flow_completed": fs.completed,
            "flow_skipped": fs.skipped,
            "flow_visible": fs.visible,
            "current_step_index": fs.current_step_index,
            "current_step_id": fs.current_step_id,
            "flow_last_action_at": fs.last_action_at,
            "captured_at": at,
        }
        for i, step in enumerate(flow.data.steps):
            rows.append(
                base
                | {
                    "step_id": step.id,
                    "step_index": i,
                    "step_started": step.state.started,
                    "step_completed": step.state.completed,
                    "step_skipped": step.state.skipped,
                    "step_last_action_at": step.state.last_action_at,
                }
            )
    return rows


class SnapshotLog:
    """Collects returned state as rows and writes them in parts on the outcome log's cadence, so a
    killed run loses at most a few seconds of it (and finishing reads back what is missing)."""

    def __init__(
        self, write_part: Callable[[pl.DataFrame], None], *, every_s: float = 2.0, max_rows: int = 50_000
    ) -> None:
        self._write, self.every_s, self.max_rows = write_part, every_s, max_rows
        self._rows: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def add(self, user_id: str, states: UserFlowStates) -> None:
        self._rows.extend(snapshot_rows(user_id, states, time.time()))
        if len(self._rows) >= self.max_rows or time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if self._rows:
            self._write(pl.DataFrame(self._rows, schema=SNAPSHOT_SCHEMA))
            self._rows = []


@dataclass
class Work:
    """Inputs of one push: the pending plan, start states, and who needs reading back."""

    pending: pl.DataFrame
    start: Mapping[str, FlowState]
    #: (user, flow) -> state before this run's first request, where not the initial state (sync)
    user_start: Mapping[tuple[str, str], FlowState]
    uncertain: frozenset[str]
    #: index of each user in plan order (the dispatch journal's unit)
    user_index: Mapping[str, int]
    rules: Rules = DEFAULT_RULES
    #: shared by every batch of one attempt: the users an unpredicted state stops the run among
    first_users: FirstUsers = field(default_factory=FirstUsers)


def _user_start(work: Work, user: str, flows: set[str]) -> dict[str, FlowState]:
    return {f: work.user_start.get((user, f), work.start[f]) for f in flows if f in work.start}


def _planned(rows: list[dict[str, Any]]) -> list[PlannedRequest]:
    return [PlannedRequest(**request_body_fields(r)) for r in rows]


def _align(
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


async def run_push(
    work: Work,
    full_plan: pl.DataFrame,
    client: FrigadeClient,
    *,
    concurrency: int,
    outcomes: OutcomeLog,
    snapshot: SnapshotLog,
    journal: DispatchJournal,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> PushSummary:
    def record(o: Outcome) -> None:
        outcomes.add(o)
        if on_outcome is not None:
            on_outcome(o)

    plans_by_user: dict[str, list[PlannedRequest]] = {}
    if work.uncertain:
        batch_users = work.pending.select("user_id").unique()["user_id"].to_list()
        uncertain_rows = full_plan.filter(pl.col("user_id").is_in([u for u in batch_users if u in work.uncertain]))
        plans_by_user = {u: _planned(rows) for u, rows in iter_user_requests(uncertain_rows)}

    async def users() -> AsyncIterator[UserWork]:
        for user, rows in iter_user_requests(work.pending):
            journal.admit(work.user_index.get(user, 0))
            requests = _planned(rows)
            start = _user_start(work, user, {r.flow_slug for r in requests})
            if user in work.uncertain:
                try:
                    state = await client.read_state(user, requests[0].group_id)
                except StopRunError:
                    raise
                except FrigadeError as exc:
                    # One user's failed read-back is that user's failure, not the run's.
                    for r in requests:
                        record(
                            _settled(r, "failed", f"could not read the state back to resume: {exc}", type(exc).__name__)
                        )
                    continue
                applied, requests, aligned = _align(requests, plans_by_user.get(user, []), start, state, work.rules)
                start.update(aligned)
                for r in applied:
                    record(_settled(r, "resolved_applied", "applied before the restart (read back)"))
                sent_flows = {r.flow_slug for r in requests} | {r.flow_slug for r in applied}
                for r in _planned(rows):
                    if r.flow_slug not in sent_flows:
                        record(_settled(r, "failed", "state read back matches no point of the plan", "Conflict"))
                if not requests:
                    snapshot.add(user, state)
                    continue
            yield UserWork(user_id=user, requests=tuple(requests), start=start)

    try:
        return await push(
            users(),
            client,
            concurrency=concurrency,
            on_outcome=record,
            on_state=snapshot.add,
            rules=work.rules,
            first_users=work.first_users,
        )
    finally:
        outcomes.flush()
        snapshot.flush()


def _settled(r: PlannedRequest, outcome: OutcomeKind, message: str, error: str | None = None) -> Outcome:
    return Outcome(
        request_id=r.request_id,
        user_id=r.user_id,
        flow_slug=r.flow_slug,
        seq=r.seq,
        status=None,
        attempts=0,
        ok=outcome != "failed",
        error_class=error,
        message=message,
        outcome=outcome,
        at=time.time(),
    )


def user_order(plan: pl.DataFrame) -> dict[str, int]:
    users = plan.select("user_id").unique(maintain_order=True)["user_id"].to_list()
    return {u: i for i, u in enumerate(users)}


def iter_batches(pending: pl.DataFrame, batch_requests: int) -> Iterator[pl.DataFrame]:
    """Whole users per batch, about ``batch_requests`` requests each, in plan order."""
    if pending.is_empty():
        return
    per_user = pending.group_by("user_id", maintain_order=True).len()
    batch_no = (per_user["len"].cum_sum() - 1) // max(batch_requests, 1)
    keyed = per_user.with_columns(batch_no.alias("batch")).select("user_id", "batch")
    tagged = pending.join(keyed, on="user_id", how="left", maintain_order="left")
    for (_,), part in tagged.group_by("batch", maintain_order=True):
        yield part.drop("batch")
