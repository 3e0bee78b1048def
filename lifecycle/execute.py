"""Push execution: plan rows -> ordered per-user work -> Frigade, with resume that never resends.

Resume rules: a request with a recorded outcome of sent / resolved_applied / rejected is done, and
so is one held behind a rejection. For the rest, users the previous attempt may have dispatched (up
to its durable reservation in dispatch.json) have their state read back first, and their pending
requests are aligned with it (``frigade.resume.align``): requests whose effect the server already
shows are skipped, never resent; a state that matches no single point of the plan is a conflict,
reported, not guessed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import polars as pl

from frigade.client import FrigadeClient
from frigade.errors import FrigadeError, InterruptedRunError, StopRunError
from frigade.models import UserFlowStates
from frigade.push import FirstUsers, Outcome, OutcomeKind, PlannedRequest, PushSummary, UserWork, push
from frigade.resume import align
from frigade.rules import DEFAULT_RULES, FlowState, Rules
from lifecycle import interrupts
from lifecycle.exitcodes import ExitCode
from lifecycle.finish import returned_and_expected
from lifecycle.job import Job
from lifecycle.prepare import in_workers, read_snapshot
from lifecycle.record import Attempt
from lifecycle.runfolder import OUTCOME_SCHEMA, DispatchJournal, OutcomeLog
from transforms.buckets import ROWS_PER_BUCKET
from transforms.codes import Codes
from transforms.merge import landed_elsewhere, replan
from transforms.outcomes import latest_outcomes, users_without_state
from transforms.reconcile import latest_snapshot
from transforms.snapshot import SNAPSHOT_SCHEMA, snapshot_rows
from transforms.state import FLOW_KEY
from transforms.sync import StateFrames, from_snapshot
from transforms.validate import catalog_frames
from transforms.work import (
    chunk_reach,
    flow_states,
    iter_batches,
    iter_user_requests,
    longest_users_first,
    pending_requests,
    request_body_fields,
    start_states,
    user_order,
)


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
    #: planned from the state Frigade holds (a policy): progress found outside the run is planned
    #: again from (``replan_work``), not a stop
    replan: bool = False


def _groups(pending: pl.DataFrame, users: frozenset[str]) -> dict[str, str | None]:
    """The group of each of ``users``' first pending request: the state a read-back asks for."""
    if not users:
        return {}
    first = pending.filter(pl.col("user_id").is_in(list(users))).group_by("user_id", maintain_order=True).first()
    return dict(zip(first["user_id"].to_list(), first["group_id"].to_list(), strict=True))


async def _read_back(
    client: FrigadeClient, groups: Mapping[str, str | None], concurrency: int
) -> dict[str, UserFlowStates | FrigadeError]:
    """The state of each user a crash may have left in flight, read ``concurrency`` at a time before the
    batch sends anything: read one by one, a batch's thousand such users took 300 s at 300 ms.
    A failed read is that user's (a stop is the run's, raised)."""
    got: dict[str, UserFlowStates | FrigadeError] = {}
    todo = iter(groups.items())

    async def reader() -> None:
        for user, group_id in todo:
            try:
                got[user] = await client.read_state(user, group_id)
            except StopRunError:
                raise
            except FrigadeError as exc:
                got[user] = exc

    if groups:
        await in_workers(reader, min(concurrency, len(groups)))
    return got


def _user_start(work: Work, user: str, flows: set[str]) -> dict[str, FlowState]:
    return {f: work.user_start.get((user, f), work.start[f]) for f in flows if f in work.start}


def _planned(rows: list[dict[str, Any]]) -> list[PlannedRequest]:
    return [PlannedRequest(**request_body_fields(r)) for r in rows]


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

    # the longest users first, a chunk of plan order at a time: the journal reserves whole chunks.
    # A chunk of twice the users sent at once (the journal's block): at 300 ms a chunk of as many
    # as are sent at once left its longest users trailing at the end of the push (0.88 of the rate)
    chunk = 2 * concurrency
    reach = chunk_reach(work.pending, chunk, work.user_index)
    pending = longest_users_first(work.pending, chunk)

    async def users() -> AsyncIterator[UserWork]:
        read_back = await _read_back(client, _groups(pending, work.uncertain), concurrency)
        for user, rows in iter_user_requests(pending):
            journal.admit(reach.get(user, 0))
            requests = _planned(rows)
            start = _user_start(work, user, {r.flow_slug for r in requests})
            if user in work.uncertain:
                state = read_back[user]
                if isinstance(state, FrigadeError):
                    # One user's failed read-back is that user's failure, not the run's.
                    for r in requests:
                        record(
                            _settled(
                                r, "failed", f"could not read the state back to resume: {state}", type(state).__name__
                            )
                        )
                    continue
                applied, requests, aligned = align(requests, plans_by_user.get(user, []), start, state, work.rules)
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
            replan=work.replan,
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


# ---------------------------------------------------------------- a run's push, in its folder


def work_for(job: Job) -> Work:
    """The pending requests of the run's plan, and which users an earlier attempt may have sent to."""
    plan = job.folder.read_parquet("plan.parquet")
    pending = pending_requests(plan, job.folder.outcomes())
    order = user_order(plan)
    uncertain: frozenset[str] = frozenset()
    reserved = DispatchJournal(job.folder, job.attempt, 1).previous()
    if reserved >= 0 and not pending.is_empty():
        pending_users = pending.select("user_id").unique()["user_id"].to_list()
        uncertain = frozenset(u for u in pending_users if order.get(u, 1 << 62) <= reserved)
    return Work(
        pending=pending,
        start=start_states(job.planned_catalog, job.rules),
        user_start=_baseline_states(job, pending),
        uncertain=uncertain,
        user_index=order,
        rules=job.rules,
        replan=job.run.existing_state is not None,
    )


def replan_work(job: Job, work: Work, per_bucket: int = ROWS_PER_BUCKET) -> Work | None:
    """The user-flows the push held because the server showed progress made outside the run, planned
    again from the state it returned (``transforms.merge.replan``): the new requests are appended to
    the plan (a resume finds them), the expected state and the starting state of those user-flows
    replaced. None when none is held, or every held one was planned again already. Only the held
    user-flows' state is ever held whole: the rest is looked through a bucket of users at a time."""
    existing = job.run.existing_state
    if existing is None or not job.folder.path("source_flows.parquet").exists():
        return None
    plan_rows = pl.scan_parquet(job.folder.path("plan.parquet"))
    outcomes = job.folder.lazy_parts("outcomes", OUTCOME_SCHEMA)
    # the requests ever held, and their latest outcomes: a few, read without the others
    ever_held = outcomes.filter(pl.col("outcome") == "held_replan").select("request_id").collect()["request_id"]
    latest = latest_outcomes(outcomes.filter(pl.col("request_id").is_in(ever_held.implode())).collect())
    held = latest.filter(pl.col("outcome") == "held_replan").group_by(FLOW_KEY).agg(pl.col("seq").max())
    # a user-flow planned again already has requests after its held ones
    last = (
        plan_rows.join(held.lazy(), on=FLOW_KEY, how="semi").group_by(FLOW_KEY).agg(pl.col("seq").max().alias("_last"))
    )
    held = held.join(last.collect(), on=FLOW_KEY).filter(pl.col("_last") <= pl.col("seq")).select(FLOW_KEY)
    # a flow whose last request's answer showed such progress has nothing held: its state tells
    held = pl.concat([held, _landed_elsewhere(job, plan_rows, outcomes, per_bucket)]).unique()
    if held.is_empty():
        return None
    plan = job.folder.read_parquet("plan.parquet")
    parts = job.folder.lazy_parts("snapshot_parts", SNAPSHOT_SCHEMA)
    current = from_snapshot(
        latest_snapshot(parts.join(held.select("user_id").unique().lazy(), on="user_id", how="semi").collect())
    )
    expected, source = (
        StateFrames(*(_held_rows(job, f"{kind}_{n}.parquet", held).collect() for n in ("flows", "steps")))
        for kind in ("expected", "source")
    )
    base = job.state_dir.load_base(held) if job.state_dir is not None and job.kind == "sync" and not job.full else None
    catalog = job.planned_catalog
    codes = Codes.from_frames(*catalog_frames(catalog.step_table(), {f.slug: f.status for f in catalog.flows}))
    rows, m_flows, m_steps = replan(held, source, expected, current, base, plan, codes, existing["policy"], job.rules)
    job.folder.write_parquet("plan.parquet", pl.concat([plan, rows]))
    for name, new in (("expected_flows", m_flows), ("expected_steps", m_steps)):
        _replace_held(job, f"{name}.parquet", held, new)
    for name, now in zip(("baseline_flows", "baseline_steps"), current, strict=True):
        _replace_held(job, f"{name}.parquet", held, now.join(held, on=FLOW_KEY, how="semi"))
    counts = dict(job.run.counts or {})
    counts["requests_planned"] = counts.get("requests_planned", 0) + rows.height
    counts["requests_replanned"] = counts.get("requests_replanned", 0) + rows.height
    counts["user_flows_replanned"] = counts.get("user_flows_replanned", 0) + held.height
    job.run.counts = counts
    job.save()
    if rows.is_empty():
        return None
    return replace(work, pending=rows, user_start=_baseline_states(job, rows), uncertain=frozenset())


def _landed_elsewhere(job: Job, plan: pl.LazyFrame, outcomes: pl.LazyFrame, per_bucket: int) -> pl.DataFrame:
    """``transforms.merge.landed_elsewhere`` over the run, a bucket of users at a time (it is per
    user-flow), each bucket's plan, outcomes, expected and returned state read alone."""
    found = []
    for where, snapshot, exp in returned_and_expected(job, per_bucket):
        current = from_snapshot(snapshot)
        requests = plan.filter(where).select("request_id", *FLOW_KEY).collect()
        latest = latest_outcomes(outcomes.filter(where).select("request_id", "outcome", "attempt", "at").collect())
        found.append(landed_elsewhere(requests, latest, exp, current))
    return pl.concat(found)


def _held_rows(job: Job, name: str, held: pl.DataFrame) -> pl.LazyFrame:
    return pl.scan_parquet(job.folder.path(name)).join(held.lazy(), on=FLOW_KEY, how="semi")


def _replace_held(job: Job, name: str, held: pl.DataFrame, new: pl.DataFrame) -> None:
    """``name``'s rows of the ``held`` user-flows replaced by ``new`` (after the others, in their
    order), streamed from the file as it is: never held whole."""
    if job.folder.path(name).exists():
        kept = pl.scan_parquet(job.folder.path(name)).join(held.lazy(), on=FLOW_KEY, how="anti", maintain_order="left")
        job.folder.sink_parquet(name, pl.concat([kept, new.lazy()]))
    else:
        job.folder.write_parquet(name, new)


def _baseline_states(job: Job, pending: pl.DataFrame) -> dict[tuple[str, str], FlowState]:
    """Start states of a sync's pending user-flows (a backfill starts from the initial state)."""
    if not job.folder.path("baseline_flows.parquet").exists() or pending.is_empty():
        return {}
    keys = pending.select("user_id", "flow_slug").unique()
    flows = job.folder.read_parquet("baseline_flows.parquet").join(keys, on=["user_id", "flow_slug"], how="semi")
    steps = job.folder.read_parquet("baseline_steps.parquet").join(keys, on=["user_id", "flow_slug"], how="semi")
    return flow_states(flows, steps, job.planned_catalog)


def begin_attempt(job: Job) -> Attempt:
    attempt = Attempt(attempt=job.attempt, started_at=datetime.now(UTC).isoformat())
    job.run.attempts = [*job.run.attempts, attempt]
    job.run.status = "pushing"
    # A resumed run is no longer stopped: the last attempt's reason stays in its attempt record.
    job.run.stop_message = None
    job.save()
    return attempt


def journal_for(job: Job) -> DispatchJournal:
    """One per attempt, shared by every batch, so the reservation only ever moves forward."""
    return DispatchJournal(job.folder, job.attempt, block=2 * job.settings.users_at_once)


def batches(job: Job, work: Work) -> list[pl.DataFrame]:
    """Whole users per batch, about ``batch_requests`` requests each, in plan order."""
    return list(iter_batches(work.pending, job.settings.batch_requests))


async def push_batch(
    job: Job,
    work: Work,
    batch: pl.DataFrame,
    client: FrigadeClient,
    journal: DispatchJournal,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> PushSummary:
    # Only this batch's uncertain users need their whole plan (to align a read-back with it).
    batch_users = batch.select("user_id").unique()
    uncertain = [u for u in batch_users["user_id"].to_list() if u in work.uncertain]
    plan = job.folder.read_parquet("plan.parquet").filter(pl.col("user_id").is_in(uncertain)) if uncertain else batch
    outcomes = OutcomeLog(job.folder, job.attempt)
    snapshot = SnapshotLog(lambda df: job.folder.write_part("snapshot_parts", job.attempt, df))
    batch_work = replace(work, pending=batch)
    return await run_push(
        batch_work,
        plan,
        client,
        concurrency=job.settings.users_at_once,
        outcomes=outcomes,
        snapshot=snapshot,
        journal=journal,
        on_outcome=on_outcome,
    )


async def fill_missing_snapshots(job: Job, client: FrigadeClient) -> int:
    """Read back every user with a request that took effect but no state in the snapshot parts, so
    reconcile and the sync state rest on what Frigade holds, never on a gap. Returns how many."""
    outcomes = job.folder.outcomes()
    if outcomes.is_empty():
        return 0
    have = job.folder.lazy_parts("snapshot_parts", SNAPSHOT_SCHEMA).select("user_id").collect()
    missing = users_without_state(outcomes, have)
    if missing:
        job.folder.write_part(
            "snapshot_parts", job.attempt, await read_snapshot(client, missing, job.settings.users_at_once)
        )
    return len(missing)


def record_stop(job: Job, attempt: Attempt, error: FrigadeError) -> None:
    attempt.stopped_by = type(error).__name__
    job.run.status = "interrupted" if isinstance(error, InterruptedRunError) else "stopped"
    job.run.stop_message = stop_message(job, error)
    job.save()


def stop_message(job: Job, error: FrigadeError) -> str:
    """Why the run stopped, that nothing is lost, and the exact command that resumes it."""
    root = job.run_root
    resume = interrupts.resume_command(root)
    how = f"resume with: {resume}" if resume else f"run the same command with --run-dir {root} to resume"
    if resume and '"$FRIGADE_API_KEY"' in resume:
        how = f"with FRIGADE_API_KEY set to the key, {how}"
    if isinstance(error, InterruptedRunError):
        return f"{str(error).rstrip('.')}. Everything done so far is kept in {root}; {how}"
    return f"{str(error).rstrip('.')}. Everything done so far is kept in {root}; fix the cause and {how}"


def exit_code_of_stop(error: StopRunError | None) -> ExitCode:
    return ExitCode.INTERRUPTED if isinstance(error, InterruptedRunError) else ExitCode.STOPPED
