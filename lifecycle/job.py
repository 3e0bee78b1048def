"""The stages of a backfill or sync run as plain functions over a run folder.

The Prefect flow in ``flows.backfill`` calls these through thin tasks; ``plan`` calls ``prepare_run``
directly, without Prefect and without sending anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from frigade.catalog import Catalog, CatalogFlow, catalog_from_api, parse_catalog
from frigade.client import FrigadeClient
from frigade.documents import DocumentError, load_mapping
from frigade.errors import CatalogError, FrigadeError, InterruptedRunError, StopRunError
from frigade.push import Outcome, PushSummary
from frigade.rules import FlowState, Rules
from lifecycle import interrupts
from lifecycle.execute import (
    SNAPSHOT_SCHEMA,
    SnapshotLog,
    Work,
    flow_states,
    iter_batches,
    pending_requests,
    run_push,
    snapshot_rows,
    user_order,
)
from lifecycle.exitcodes import ExitCode
from lifecycle.exports import resolve_path
from lifecycle.params import BackfillParams, Kind, SyncParams
from lifecycle.pipeline import Analysis, Prepared, accounting_closes, analyze, plan, start_states
from lifecycle.report import render
from lifecycle.runfolder import DispatchJournal, OutcomeLog, RunFolder, file_digest, new_run_id
from lifecycle.settings import Settings, failure_limit
from lifecycle.statedir import KNOWN_SNAPSHOT, StateDir
from transforms.cost import webhook_deliveries
from transforms.mapping import SourceMapping
from transforms.presets import resolve_mapping
from transforms.quarantine import catalog_hints, examples, nothing_to_migrate
from transforms.reconcile import last_sent_times, latest_snapshot, reconcile, targeting_summary
from transforms.schema import InputError, input_error
from transforms.sync import clean_events_hashes, from_snapshot

#: flows.backfill._run still names it (outside this change); every other code is ExitCode's
EXIT_STOPPED = ExitCode.STOPPED
#: run.json statuses of a run that stopped before its end (resumable)
STOPPED_STATUSES = ("stopped", "interrupted")


@dataclass
class Job:
    """One run: its inputs, settings, folder and attempt number."""

    exports: list[Path]
    settings: Settings
    folder: RunFolder
    kind: Kind = "backfill"
    mapping_overrides: dict[str, Any] = field(default_factory=dict)
    #: sync only: the remembered state, and how to plan against it
    state_dir: StateDir | None = None
    full: bool = False
    from_current: bool = False
    attempt: int = 1
    run: dict[str, Any] = field(default_factory=dict)
    #: a resume whose rules profile differs from the one the plan was made with: plan again
    replan: bool = False

    @property
    def rules(self) -> Rules:
        return self.settings.rules_profile()

    @classmethod
    def open(cls, params: BackfillParams, settings: Settings, kind: Kind = "backfill") -> Job:
        """The run ``params`` describe; ``params.run_dir`` is resumed when it holds one."""
        folder = RunFolder(Path(params.run_dir) if params.run_dir else Path("runs") / new_run_id())
        job = cls([Path(p) for p in params.exports], settings, folder, kind, dict(params.mapping_overrides))
        # Remembered state is kept per target API. A backfill on the embedded emulator remembers none
        # (its database stays in the run folder, for a resume); a sync there keeps the emulator's
        # database in its state folder, so the next sync finds the state it remembers.
        state_dir = params.state_dir
        if (kind == "sync" or state_dir) and (kind == "sync" or not settings.embedded):
            job.state_dir = StateDir.for_target(state_dir, settings.target)
        if isinstance(params, SyncParams):
            job.full, job.from_current = params.full, params.from_current
        if not job.exports:
            raise InputError("no export files given")
        job.run = folder.read_json()
        job.attempt = len(job.run.get("attempts", [])) + 1
        return job

    @property
    def emulator_db(self) -> Path:
        """Where the embedded emulator keeps its database: with the remembered state, else in the run
        folder, so that a resume (and the next sync) finds what the emulator was sent."""
        return (self.state_dir.root if self.state_dir is not None else self.folder.root) / "emulator.db"

    @property
    def resuming(self) -> bool:
        return self.folder.path("plan.parquet").exists() and bool(self.run)

    def save(self) -> None:
        self.folder.write_json(self.run)


def mapping_for(job: Job) -> SourceMapping:
    return mapping_of(job.settings, job.mapping_overrides)


def mapping_of(settings: Settings, overrides: dict[str, Any] | None = None) -> SourceMapping:
    """The run's mapping: the preset, the mapping file over it, the command-line overrides over both."""
    doc: dict[str, Any] | None = None
    if settings.mapping:
        try:
            doc = load_mapping(settings.mapping, "a mapping file: a YAML mapping of field: value")
        except DocumentError as exc:
            raise input_error(exc) from exc
    return resolve_mapping(settings.preset, doc, overrides or None, mapping_where=str(settings.mapping))


def load_catalog_file(path: str) -> Catalog:
    p = Path(path)
    if not p.exists():
        raise InputError("catalog file not found", file=path)
    try:
        return parse_catalog(p.read_text(encoding="utf-8"), path)
    except CatalogError as exc:
        # the catalog's own messages start with the file's name
        raise InputError(f"catalog {exc}", hint="see the catalog format in cli.md or README") from exc


async def load_catalog(source: str, client: FrigadeClient | None) -> Catalog:
    if source != "api":
        return load_catalog_file(source)
    if client is None:
        raise InputError("--catalog api needs an API to read the flows from")
    return catalog_from_api(await client.list_flows())


def _check_inputs_unchanged(job: Job, digests: list[dict[str, Any]]) -> None:
    before = {p["path"]: p["sha256"] for p in job.run.get("inputs", [])}
    now = {p["path"]: p["sha256"] for p in digests}
    if before and before != now:
        raise InputError(
            f"run folder {job.folder.root} was made from other inputs; resume it with the same files "
            "or start a new run folder"
        )


def analyze_run(job: Job, catalog: Catalog) -> Analysis | None:
    """Load, validate and replay the export. On a resume the plan already in the folder is kept
    (re-planning could differ and resend), so this returns None."""
    for p in job.exports:
        resolve_path(p)  # a missing file, a folder or an unmatched glob: exit 2, not a traceback
    digests = [file_digest(p) for p in job.exports]
    if job.resuming:
        _check_inputs_unchanged(job, digests)
        recorded = {k: v for k, v in job.run.get("rules", {}).items() if k != "name"}
        if "rules" not in job.run or recorded == job.rules.settings():
            return None
        supersede_plan(job)
    if job.state_dir is not None:
        job.state_dir.check_target(job.settings.target)
        if job.kind == "sync" and not job.from_current:
            job.state_dir.check_no_unfinished_run(job.folder.root)
    job.run["inputs"] = digests
    # With a state folder every analysed user's events are hashed, so that the next sync can skip the users
    # whose events are unchanged; a plain sync skips those the state folder remembers.
    plain_sync = job.kind == "sync" and not job.full and not job.from_current
    known = job.state_dir.load_events_hashes() if job.state_dir is not None and plain_sync else None
    return analyze(
        job.exports, mapping_for(job), catalog, hash_events=job.state_dir is not None, known=known, rules=job.rules
    )


def supersede_plan(job: Job) -> None:
    """A resume under another rules profile: the plan, its outcomes and snapshot parts were made
    under rules this server does not play. They move to ``superseded/<n>/`` (kept for the audit) and
    the run plans again from the state read back for every user, so nothing in effect is resent."""
    if job.settings.mode == "history":
        raise InputError(
            "a history run cannot change its rules profile on resume (its history would be replayed from "
            "the middle); start a new run folder, or resume with the rules it was planned with"
        )
    previous = job.run.get("superseded", [])
    dest = job.folder.path(f"superseded/{len(previous) + 1}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("plan.parquet", "outcomes", "snapshot_parts", "dispatch.json"):
        src = job.folder.path(name)
        if src.exists():
            src.rename(dest / name)
    previous.append({"rules": job.run.get("rules"), "outcomes": job.run.get("outcomes"), "folder": str(dest)})
    job.run["superseded"] = previous
    job.replan = True


def baseline_for(job: Job) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """What a sync plans against: the remembered state (none with --full); --from-current reads it."""
    if job.kind != "sync" or job.state_dir is None or job.full or job.from_current:
        return None
    return job.state_dir.load()


def plan_run(
    job: Job, analysis: Analysis, catalog: Catalog, baseline: tuple[pl.DataFrame, pl.DataFrame] | None
) -> Prepared:
    prepared = plan(analysis, mode=job.settings.mode, baseline=baseline, rules=job.rules)
    why = nothing_to_migrate(prepared.counts, prepared.quarantine)
    if why is not None:
        raise InputError(why, hint="fix the mapping or the catalog; `frigade-migrate inspect EXPORT` shows the events")
    job.folder.create()
    job.folder.write_parquet("quarantine.parquet", prepared.quarantine)
    job.folder.write_parquet("plan.parquet", prepared.plan)
    job.folder.write_parquet("expected_flows.parquet", prepared.expected_flows)
    job.folder.write_parquet("expected_steps.parquet", prepared.expected_steps)
    if analysis.events_hashes is not None:
        job.folder.write_parquet("events_hashes.parquet", analysis.events_hashes)
    job.run.update(
        run_id=job.folder.root.name,
        kind=job.kind,
        created_at=datetime.now(UTC).isoformat(),
        settings=job.settings.public() | {"full": job.full, "from_current": job.from_current},
        state_dir=str(job.state_dir.root) if job.state_dir else None,
        state_target=job.settings.target if job.state_dir else None,
        catalog=[{"slug": f.slug, "steps": list(f.step_ids), "status": f.status} for f in catalog.flows],
        counts=prepared.counts,
        accounting_closes=accounting_closes(prepared.counts),
        quarantine_reasons=prepared.quarantine_reasons,
        quarantine_examples=examples(prepared.quarantine),
        catalog_hints=catalog_hints(prepared.quarantine, {f.slug: list(f.step_ids) for f in catalog.active}),
        dropped_events=prepared.dropped_events,
        requests_by_action=_tally(prepared.plan, "action"),
        webhook_deliveries=webhook_deliveries(prepared.plan),
        rules=asdict(job.rules),
        status="planned",
        # a plan made again under other rules keeps the run's earlier attempts on record
        attempts=job.run.get("attempts", []) if job.replan else [],
    )
    if baseline is not None and not baseline[0].is_empty():
        # Only the planned user-flows' starting state: what a resume and the ambiguity checks need.
        keys = prepared.plan.select("user_id", "flow_slug").unique()
        for name, frame in zip(("baseline_flows", "baseline_steps"), baseline, strict=True):
            job.folder.write_parquet(f"{name}.parquet", frame.join(keys, on=["user_id", "flow_slug"], how="semi"))
    job.save()
    if job.state_dir is not None:
        job.state_dir.mark_unfinished(job.folder.root)
    return prepared


def catalog_of(job: Job) -> Catalog:
    """The catalog recorded at planning time: a resume validates against what the plan was made from."""
    return Catalog(
        tuple(CatalogFlow(slug=f["slug"], step_ids=tuple(f["steps"]), status=f["status"]) for f in job.run["catalog"])
    )


def work_for(job: Job) -> Work:
    plan = job.folder.read_parquet("plan.parquet")
    outcomes = job.folder.outcomes()
    pending = pending_requests(plan, outcomes)
    order = user_order(plan)
    uncertain: frozenset[str] = frozenset()
    reserved = DispatchJournal(job.folder, job.attempt, 1).previous()
    if reserved >= 0 and not pending.is_empty():
        pending_users = pending.select("user_id").unique()["user_id"].to_list()
        uncertain = frozenset(u for u in pending_users if order.get(u, 1 << 62) <= reserved)
    return Work(
        pending=pending,
        start=start_states(catalog_of(job), job.rules),
        user_start=_baseline_states(job, pending),
        uncertain=uncertain,
        user_index=order,
        rules=job.rules,
    )


def _baseline_states(job: Job, pending: pl.DataFrame) -> dict[tuple[str, str], FlowState]:
    """Start states of a sync's pending user-flows (a backfill starts from the initial state)."""
    if not job.folder.path("baseline_flows.parquet").exists() or pending.is_empty():
        return {}
    keys = pending.select("user_id", "flow_slug").unique()
    flows = job.folder.read_parquet("baseline_flows.parquet").join(keys, on=["user_id", "flow_slug"], how="semi")
    steps = job.folder.read_parquet("baseline_steps.parquet").join(keys, on=["user_id", "flow_slug"], how="semi")
    return flow_states(flows, steps, catalog_of(job))


async def read_snapshot(client: FrigadeClient, users: list[str], concurrency: int) -> pl.DataFrame:
    """The state Frigade has now for ``users``, as snapshot rows, read by ``concurrency`` workers."""
    rows: list[dict[str, Any]] = []
    queue = iter(users)

    async def worker() -> None:
        for user in queue:
            rows.extend(snapshot_rows(user, await client.read_state(user), time.time()))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(users)))):
                group.create_task(worker())
    except* StopRunError as stops:
        # one stop, not a group of them: the callers handle a stop like any other request's
        raise stops.exceptions[0] from None
    return pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA)


async def replan_baseline(job: Job, analysis: Analysis, client: FrigadeClient) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A plan made again under other rules starts from the state Frigade holds now: read back for the
    users an earlier plan may have touched (the others are still in the initial state, and a read
    would count them as active). What is read is also the snapshot of those the new plan leaves alone."""
    users = set(analysis.targets[0]["user_id"].unique().to_list()) & _maybe_touched(job)
    snap = await read_snapshot(client, sorted(users), job.settings.concurrency)
    job.folder.create()
    job.folder.write_part("snapshot_parts", job.attempt, snap)
    return from_snapshot(snap)


def _maybe_touched(job: Job) -> set[str]:
    """Users with an outcome in a superseded plan, or handed to a sender before its last stop."""
    touched: set[str] = set()
    for entry in job.run.get("superseded", []):
        old = RunFolder(Path(entry["folder"]))
        touched |= set(old.outcomes()["user_id"].unique().to_list())
        reserved = int(old.read_json("dispatch.json").get("reserved_through", -1))
        if reserved >= 0 and old.path("plan.parquet").exists():
            order = user_order(old.read_parquet("plan.parquet"))
            touched |= {u for u, i in order.items() if i <= reserved}
    return touched


async def read_baseline(client: FrigadeClient, users: list[str], concurrency: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """--from-current: the state Frigade has now for every user of the export."""
    return from_snapshot(await read_snapshot(client, users, concurrency))


def begin_attempt(job: Job) -> dict[str, Any]:
    attempt = {"attempt": job.attempt, "started_at": datetime.now(UTC).isoformat(), "stopped_by": None}
    job.run.setdefault("attempts", []).append(attempt)
    job.run["status"] = "pushing"
    # A resumed run is no longer stopped: the last attempt's reason stays in its attempt record.
    job.run.pop("stop_message", None)
    job.save()
    return attempt


def journal_for(job: Job) -> DispatchJournal:
    """One per attempt, shared by every batch, so the reservation only ever moves forward."""
    return DispatchJournal(job.folder, job.attempt, block=2 * job.settings.concurrency)


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
    batch_work = Work(batch, work.start, work.user_start, work.uncertain, work.user_index, work.rules, work.first_users)
    return await run_push(
        batch_work,
        plan,
        client,
        concurrency=job.settings.concurrency,
        outcomes=outcomes,
        snapshot=snapshot,
        journal=journal,
        on_outcome=on_outcome,
    )


def batches(work: Work, batch_requests: int) -> list[pl.DataFrame]:
    return list(iter_batches(work.pending, batch_requests))


def record_stop(job: Job, attempt: dict[str, Any], error: FrigadeError) -> None:
    attempt["stopped_by"] = type(error).__name__
    interrupted = isinstance(error, InterruptedRunError)
    job.run["status"] = "interrupted" if interrupted else "stopped"
    job.run["stop_message"] = stop_message(job, error)
    job.save()


def stop_message(job: Job, error: FrigadeError) -> str:
    """Why the run stopped, that nothing is lost, and the exact command that resumes it."""
    root = job.folder.root
    resume = interrupts.resume_command(root)
    how = f"resume with: {resume}" if resume else f"run the same command with --run-dir {root} to resume"
    if resume and '"$FRIGADE_API_KEY"' in resume:
        how = f"with FRIGADE_API_KEY set to the key, {how}"
    if isinstance(error, InterruptedRunError):
        return f"{str(error).rstrip('.')}. Everything done so far is kept in {root}; {how}"
    return f"{str(error).rstrip('.')}. Everything done so far is kept in {root}; fix the cause and {how}"


def exit_code_of_stop(error: StopRunError | None) -> ExitCode:
    return ExitCode.INTERRUPTED if isinstance(error, InterruptedRunError) else ExitCode.STOPPED


@dataclass
class RunResult:
    exit_code: ExitCode
    run_dir: str
    summary: dict[str, Any]
    report: str


async def fill_missing_snapshots(job: Job, client: FrigadeClient) -> int:
    """Read back every user with a request that took effect but no state in the snapshot parts (the
    kill of an earlier attempt can lose the last seconds of them), so reconcile and the sync state
    rest on what Frigade holds, never on a gap. Returns how many users were read."""
    outcomes = job.folder.outcomes()
    if outcomes.is_empty():
        return 0
    took = outcomes.filter(pl.col("outcome").is_in(["sent", "resolved_applied"])).select("user_id").unique()
    have = job.folder.scan_parts("snapshot_parts", SNAPSHOT_SCHEMA).select("user_id").unique()
    missing = took.join(have, on="user_id", how="anti")["user_id"].sort().to_list()
    if missing:
        job.folder.write_part(
            "snapshot_parts", job.attempt, await read_snapshot(client, missing, job.settings.concurrency)
        )
    return len(missing)


def finish_run(job: Job, attempt: dict[str, Any], elapsed_s: float) -> RunResult:
    """Snapshot, reconcile, count, report. Runs after a stop too, over what was done."""
    plan = job.folder.read_parquet("plan.parquet")
    outcomes = job.folder.outcomes()
    snapshot = latest_snapshot(job.folder.scan_parts("snapshot_parts", SNAPSHOT_SCHEMA))
    job.folder.write_parquet("snapshot.parquet", snapshot)
    exp_flows = job.folder.read_parquet("expected_flows.parquet")
    exp_steps = job.folder.read_parquet("expected_steps.parquet")
    settled = outcomes.filter(pl.col("outcome").is_in(["sent", "resolved_applied"]))["request_id"]
    # lastActionAt is the migration's only where the server honours a back-dated createdAt
    honoured = job.settings.send_created_at and job.rules.honours_created_at
    last_sent = last_sent_times(plan, settled) if honoured else None
    touched = _touched_users(job, plan)
    mismatches = reconcile(exp_flows, exp_steps, snapshot, touched, last_sent)
    job.run["targeting"] = targeting_summary(snapshot.filter(pl.col("user_id").is_in(touched.implode())))
    job.folder.write_parquet("reconcile.parquet", mismatches)
    latest = outcomes.sort("attempt", "at").unique("request_id", keep="last", maintain_order=True)
    by_outcome = _tally(latest, "outcome")
    # a user held because the server's state was not the one predicted did not land either
    bad = latest.filter(pl.col("outcome").is_in(["rejected", "failed", "held_unpredicted"]))
    failed_users = bad["user_id"].n_unique() if bad.height else 0
    # A user-flow whose requests failed is expected not to match: --max-failures decides about those.
    # Any other mismatch means Frigade holds something the export did not say, and fails the run.
    unsettled = latest.filter(pl.col("outcome").is_in(["rejected", "failed", "held", "held_unpredicted"])).select(
        "user_id", "flow_slug"
    )
    unexplained = mismatches.join(unsettled.unique(), on=["user_id", "flow_slug"], how="anti")
    this_attempt = outcomes.filter(pl.col("attempt") == job.attempt)
    attempt.update(
        finished_at=datetime.now(UTC).isoformat(),
        elapsed_s=round(elapsed_s, 3),
        sent=int((this_attempt["outcome"] == "sent").sum()) if this_attempt.height else 0,
    )
    limit = failure_limit(job.settings.max_failures, job.run["counts"]["users"])
    stopped = job.run.get("status") in STOPPED_STATUSES
    job.run.update(
        outcomes=by_outcome,
        failed_users=failed_users,
        failure_reasons=dict(
            Counter(
                f"{r['error_class']}: {(r['message'] or '')[:120]}"
                for r in bad.select("error_class", "message").to_dicts()
            )
        ),
        mismatches=mismatches.height,
        unexplained_mismatches=unexplained.height,
        mismatched_users=mismatches["user_id"].n_unique() if mismatches.height else 0,
        **user_tallies(plan, latest, mismatches, touched),
    )
    if not stopped:
        failed = failed_users > limit or unexplained.height > 0
        job.run["status"] = "failed" if failed else "succeeded"
    job.save()
    if job.state_dir is not None and not stopped:
        job.state_dir.record(
            snapshot, job.run["run_id"], job.settings.target, _events_hashes(job, plan, latest, mismatches)
        )
        # A sync's snapshot holds only the users it planned; an audit compares full states.
        job.folder.write_parquet(KNOWN_SNAPSHOT, job.state_dir.known_snapshot())
    per_flow = _per_flow(plan, exp_flows)
    report = render(job.run, per_flow=per_flow, mismatch_sample=mismatches.head(20).to_dicts())
    job.folder.write_text("report.md", report)
    if stopped:
        code = ExitCode.INTERRUPTED if job.run["status"] == "interrupted" else ExitCode.STOPPED
    else:
        code = ExitCode.FAILURES if job.run["status"] == "failed" else ExitCode.OK
    return RunResult(code, str(job.folder.root), job.run, report)


def user_tallies(
    plan: pl.DataFrame, latest: pl.DataFrame, mismatches: pl.DataFrame, reconciled: pl.Series
) -> dict[str, int]:
    """Every reconciled user in one of: matching the export, differing from it, or unfinished (a
    request of theirs has no outcome yet: a stop came first); and how many had a request accepted."""
    accepted = latest.filter(pl.col("outcome").is_in(["sent", "resolved_applied"])).get_column("user_id").unique()
    users = reconciled.unique()
    unfinished = plan.join(latest.select("request_id"), on="request_id", how="anti").get_column("user_id").unique()
    off = mismatches.get_column("user_id").unique()
    differing = off.filter(~off.is_in(unfinished.implode()))
    return {
        "users_sent": accepted.len(),
        "users_not_reached": unfinished.len(),
        "users_differing": differing.len(),
        "users_matching": users.len() - unfinished.len() - differing.len(),
    }


def _touched_users(job: Job, plan: pl.DataFrame) -> pl.Series:
    """Users of the plan, and those of the plans a change of rules superseded that were read back."""
    read_back = sorted(_maybe_touched(job)) if job.run.get("superseded") else []
    return pl.concat(
        [plan.select("user_id"), pl.DataFrame({"user_id": read_back}, schema={"user_id": pl.String})]
    ).unique()["user_id"]


def _events_hashes(
    job: Job, plan: pl.DataFrame, latest: pl.DataFrame, mismatches: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(events hashes of the users this run analysed, those of them it left exactly at their target). A
    user with a request not sent (rejected, failed, held, never tried) or a mismatch is not left
    there: forgetting their print makes the next sync plan them again, export changed or not."""
    if not job.folder.path("events_hashes.parquet").exists():
        return None
    analysed = job.folder.read_parquet("events_hashes.parquet")
    return analysed, left_at_target(analysed, plan, latest, mismatches)


def left_at_target(
    analysed: pl.DataFrame, plan: pl.DataFrame, latest: pl.DataFrame, mismatches: pl.DataFrame
) -> pl.DataFrame:
    """The events hashes of the analysed users whose every planned request took effect and whose state
    matched: the users a run left exactly at their target."""
    settled = latest.filter(pl.col("outcome").is_in(["sent", "resolved_applied", "already_in_effect"])).select(
        "request_id"
    )
    unsent = plan.join(settled, on="request_id", how="anti").get_column("user_id")
    return clean_events_hashes(analysed, pl.concat([unsent, mismatches.get_column("user_id")]).unique())


def _per_flow(plan: pl.DataFrame, exp_flows: pl.DataFrame) -> list[dict[str, Any]]:
    req = plan.group_by("flow_slug").agg(pl.len().alias("requests"))
    st = exp_flows.group_by("flow_slug").agg(
        pl.len().alias("users"),
        pl.col("started").sum(),
        pl.col("completed").sum(),
        pl.col("skipped").sum(),
    )
    return st.join(req, on="flow_slug", how="left").fill_null(0).sort("flow_slug").to_dicts()


def _tally(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """How many rows hold each value of ``column``, counted by polars (no Python object per row)."""
    return {str(k): int(v) for k, v in frame.group_by(column).len().sort(column).iter_rows()}


def now() -> float:
    return time.monotonic()
