"""A run up to its plan, in its folder: the export analysed, the baseline chosen, the plan written.

``analyze_run`` reads the exports (nothing on a resume: the plan in the folder is kept, since planning
again could differ and resend); ``plan_run`` writes plan, quarantine and expected state, and records
what was planned in run.json.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from frigade.catalog import Catalog
from frigade.client import FrigadeClient
from frigade.errors import StopRunError
from lifecycle.catalogs import catalog_record
from lifecycle.exports import analyze_exports, analyze_split, input_digests, resolve_path
from lifecycle.job import SPLIT_DIR, Job
from lifecycle.record import Superseded
from lifecycle.runfolder import RunFolder, key_check, normal_target, recorded_settings
from lifecycle.settings import failure_limit
from transforms.accounting import accounting_closes
from transforms.analysis import Analysis, Prepared, plan_requests
from transforms.cost import webhook_deliveries
from transforms.merge import Policy, users_with_progress
from transforms.outcomes import tally
from transforms.quarantine import catalog_hints, examples, nothing_to_migrate
from transforms.schema import InputError
from transforms.snapshot import SNAPSHOT_SCHEMA, snapshot_rows
from transforms.sync import StateFrames, from_snapshot, remembered
from transforms.work import user_order

#: what a run refused for having nothing to migrate is told to do
NOTHING_TO_MIGRATE_HINT = "fix the mapping or the catalog; `frigade-migrate inspect EXPORT` shows the events"


def analyze_run(job: Job, catalog: Catalog) -> Analysis | None:
    """Load, validate and replay the export; None on a resume that keeps its plan."""
    # a shard's inputs and state folder are its run's, checked by the run (lifecycle.shards.open_shards)
    whole = job.shard is None
    digests = checked_inputs(job, resuming=job.resuming) if whole else []
    if job.resuming:
        recorded = {k: v for k, v in (job.run.rules or {}).items() if k != "name"}
        if job.run.rules is None or recorded == job.rules.settings():
            return None
        supersede_plan(job)
    if whole:
        check_state_dir(job)
        job.run.inputs = digests
    # With a state folder every analysed user's events are hashed, so that the next sync can skip the
    # users whose events are unchanged; a plain sync skips those the state folder remembers.
    known = job.state_dir.load_events_hashes() if job.state_dir is not None and job.plain_sync else None
    hash_events = job.state_dir is not None
    if job.shard is not None:
        return analyze_split(
            job.exports,
            job.mapping(),
            catalog,
            job.run_root / SPLIT_DIR,
            job.shard,
            hash_events=hash_events,
            known=known,
            rules=job.rules,
        )
    return analyze_exports(job.exports, job.mapping(), catalog, hash_events=hash_events, known=known, rules=job.rules)


def checked_inputs(job: Job, *, resuming: bool) -> list[dict[str, Any]]:
    """The exports' digests, each one a readable file; a resume refuses other inputs or other plan
    settings than its folder was planned with."""
    for p in job.exports:
        resolve_path(p)  # a missing file, a folder or an unmatched glob: exit 2, not a traceback
    digests = input_digests(job.exports)
    if resuming:
        check_inputs_unchanged(job, digests)
        check_plan_settings_unchanged(job)
    return digests


def check_state_dir(job: Job) -> None:
    """The state folder is this API's, and no other sync left it unfinished."""
    if job.state_dir is not None:
        job.state_dir.check_target(job.settings.target)
        if job.kind == "sync" and not job.from_current:
            job.state_dir.check_no_unfinished_run(job.folder.root)


def check_inputs_unchanged(job: Job, digests: list[dict[str, Any]]) -> None:
    before = {p["path"]: p["sha256"] for p in job.run.inputs or []}
    now = {p["path"]: p["sha256"] for p in digests}
    if before and before != now:
        raise InputError(
            f"run folder {job.folder.root} was made from other inputs; resume it with the same files "
            "or start a new run folder"
        )


#: the settings a plan was made with: a resume under others would finish a plan they did not make
PLAN_SETTINGS = ("mode", "preset", "mapping", "catalog", "send_created_at", "shards")


def check_plan_settings_unchanged(job: Job) -> None:
    recorded = job.run.settings or {}
    now = job.settings.public()
    # a shard count not given is the folder's own
    changed = [
        name
        for name in PLAN_SETTINGS
        if name in recorded and recorded[name] != now.get(name) and not (name == "shards" and now.get(name) is None)
    ]
    if changed:
        was = ", ".join(f"{name} {recorded[name]!r}" for name in changed)
        raise InputError(
            f"run folder {job.folder.root} was planned with {was}; resume it with the same settings "
            "(rate, concurrency and the outage window may change), or start a new run folder"
        )


def refuse_nothing_to_migrate(counts: Mapping[str, int], quarantine: pl.DataFrame) -> None:
    """A plan from which not one row can be migrated is a mapping or catalog problem: exit 2."""
    why = nothing_to_migrate(counts, quarantine)
    if why is not None:
        raise InputError(why, hint=NOTHING_TO_MIGRATE_HINT)


def refuse_plan(counts: Mapping[str, int], quarantine: pl.DataFrame, max_quarantined: str | None) -> None:
    """Every refusal of a whole plan's counts (exit 2, before anything is sent)."""
    refuse_nothing_to_migrate(counts, quarantine)
    refuse_too_many_quarantined(counts, quarantine, max_quarantined)


def refuse_too_many_quarantined(counts: Mapping[str, int], quarantine: pl.DataFrame, spec: str | None) -> None:
    """``--max-quarantined``: a plan that quarantines more rows than the user allows is refused before
    anything is sent (exit 2), naming the most frequent reason and where its first rows are. A row
    planned for one event that also carries a lost one counts too: the cap is what the user accepts."""
    if spec is None:
        return
    rows, partly = counts.get("rows_in", 0), counts.get("rows_partly_not_migrated", 0)
    bad = counts.get("rows_quarantined", 0) + partly
    if bad <= failure_limit(spec, rows, "--max-quarantined"):
        return
    share = f" ({bad / rows:.1%})" if rows else ""
    top = next(iter(examples(quarantine, per_reason=3, reasons=1).items()), None)
    why = f"; the most frequent reason: {top[0]} (first at {', '.join(top[1])})" if top else ""
    raise InputError(
        f"{bad:,} of {rows:,} rows are quarantined{' or carry progress not migrated' if partly else ''}{share}, "
        f"more than --max-quarantined {spec} allows{why}",
        hint="nothing was sent; fix the mapping or the export (`frigade-migrate plan` lists every reason), "
        "or raise --max-quarantined",
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
    dest = job.folder.path(f"superseded/{len(job.run.superseded) + 1}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("plan.parquet", "outcomes", "snapshot_parts", "dispatch.json"):
        src = job.folder.path(name)
        if src.exists():
            src.rename(dest / name)
    entry = Superseded(rules=job.run.rules, outcomes=job.run.outcomes, folder=str(dest))
    job.run.superseded = [*job.run.superseded, entry]
    job.replan = True


def baseline_for(job: Job) -> StateFrames | None:
    """What a sync plans against: the remembered state (none with --full); --from-current reads it."""
    if job.state_dir is None or not job.plain_sync:
        return None
    return job.state_dir.load()


@dataclass(frozen=True)
class Starting:
    """What a plan starts from. ``current``: the state Frigade holds, read for ``reads["users_read"]``
    users (the others are taken to be in the initial state); ``base``: what this tool last asked for
    (a sync's remembered source targets), the base of the merge. Without ``policy`` the run plans as
    before the merge existed: from ``current`` (a replan) or the remembered state, to the export."""

    current: StateFrames | None
    base: StateFrames | None = None
    policy: Policy | None = None
    reads: dict[str, int] = field(default_factory=dict)


async def starting_state(job: Job, analysis: Analysis, client: FrigadeClient) -> Starting:
    """Existing state is the starting point: before a user's first write the job knows that user's
    state. Every user the run plans is read, a backfill's and a sync's alike: a user left unread would
    be planned from the initial state (or the remembered one) while Frigade may hold more, so a first
    write could move a pointer back or change nothing. History mode reads too (the caller refuses to
    append onto existing state under ``--policy merge``). A replan reads as before."""
    if job.replan:
        return Starting(await replan_baseline(job, analysis, client))
    base = job.state_dir.load_base() if job.state_dir is not None and job.kind == "sync" and not job.full else None
    users = analysis.targets.flows["user_id"].unique().sort().to_list()
    read = await read_current(client, users, job.settings.users_at_once)
    refuse_history_onto_state(job.settings.mode, job.settings.policy, users_with_progress(read))
    return Starting(read, base, job.settings.policy, {"users_read": len(users)})


def refuse_history_onto_state(mode: str, policy: Policy, with_state: int) -> None:
    """History mode sends every event, the merge does not apply to it: onto users who already have
    state it would move their pointers back and redo what they did, so under ``merge`` it stops here,
    before anything is sent."""
    if mode == "history" and policy == "merge" and with_state:
        raise InputError(
            f"--mode history: {with_state} of the export's users already have state in Frigade, which replaying "
            "every event would undo: use --mode state (merges with it) or --policy overwrite (replaces it)"
        )


def plan_run(job: Job, analysis: Analysis, catalog: Catalog, start: Starting | StateFrames | None) -> Prepared:
    if not isinstance(start, Starting):
        start = Starting(start)
    if start.policy is None:
        baseline = start.current
        prepared = plan_requests(analysis, mode=job.settings.mode, baseline=baseline, rules=job.rules)
    else:
        baseline = start.current
        prepared = plan_requests(
            analysis,
            mode=job.settings.mode,
            baseline=start.base,
            current=start.current,
            policy=start.policy,
            rules=job.rules,
        )
        job.run.existing_state = {"policy": start.policy, **start.reads, **(prepared.existing or {})}
        if prepared.conflicts is not None:
            job.folder.create()
            job.folder.write_parquet("conflicts.parquet", prepared.conflicts)
            job.run.conflict_users = prepared.conflicts["user_id"].unique().sort().head(20).to_list()
        # what the next sync's merge takes as the base: what the export asked for this time
        job.folder.create()
        for name, frame in zip(("source_flows", "source_steps"), remembered(*analysis.targets), strict=True):
            job.folder.write_parquet(f"{name}.parquet", frame)
    # a shard with nothing to migrate is fine: the run refuses when none of its shards has anything
    if job.shard is None:
        refuse_plan(prepared.counts, prepared.quarantine, job.settings.max_quarantined)
    _write_plan(job, prepared, analysis, baseline)
    _record_plan(job, prepared, catalog)
    job.save()
    if job.state_dir is not None and job.shard is None:
        job.state_dir.mark_unfinished(job.folder.root)
    return prepared


def _write_plan(job: Job, prepared: Prepared, analysis: Analysis, baseline: StateFrames | None) -> None:
    job.folder.create()
    job.folder.write_parquet("quarantine.parquet", prepared.quarantine)
    job.folder.write_parquet("plan.parquet", prepared.plan)
    job.folder.write_parquet("expected_flows.parquet", prepared.expected_flows)
    job.folder.write_parquet("expected_steps.parquet", prepared.expected_steps)
    if analysis.events_hashes is not None:
        job.folder.write_parquet("events_hashes.parquet", analysis.events_hashes)
    if baseline is not None and not baseline.flows.is_empty():
        # Only the planned user-flows' starting state: what a resume and the ambiguity checks need.
        keys = prepared.plan.select("user_id", "flow_slug").unique()
        for name, frame in zip(("baseline_flows", "baseline_steps"), baseline, strict=True):
            job.folder.write_parquet(f"{name}.parquet", frame.join(keys, on=["user_id", "flow_slug"], how="semi"))


def _record_plan(job: Job, prepared: Prepared, catalog: Catalog) -> None:
    run, settings = job.run, job.settings
    run.run_id, run.kind, run.created_at = job.folder.root.name, job.kind, datetime.now(UTC).isoformat()
    run.settings = recorded_settings(settings) | {"full": job.full, "from_current": job.from_current}
    run.key_check = key_check(settings.api_key)
    run.state_dir = str(job.state_dir.root) if job.state_dir else None
    run.state_target = normal_target(settings.target) if job.state_dir else None
    run.catalog = catalog_record(catalog)
    run.counts = prepared.counts
    run.accounting_closes = accounting_closes(prepared.counts)
    run.quarantine_reasons = prepared.quarantine_reasons
    run.quarantine_examples = examples(prepared.quarantine)
    run.catalog_hints = catalog_hints(prepared.quarantine, {f.slug: list(f.step_ids) for f in catalog.active})
    run.dropped_events = prepared.dropped_events
    run.requests_by_action = tally(prepared.plan, "action")
    run.webhook_deliveries = webhook_deliveries(prepared.plan)
    run.rules = asdict(job.rules)
    run.status = "planned"
    # a plan made again under other rules keeps the run's earlier attempts on record
    if not job.replan:
        run.attempts = []


_ROWS_PER_FRAME = 20_000


async def _read_states(
    client: FrigadeClient, users: list[str], concurrency: int, part: Callable[[pl.DataFrame], None]
) -> None:
    """Reads the state Frigade has now for ``users`` with ``concurrency`` workers, handing it on as
    snapshot frames of whole users (about ``_ROWS_PER_FRAME`` rows each; at least one, maybe empty).
    Rows as dicts take ten times their size in a frame: 20,000 users' states held as dicts were
    200 MiB of the job's peak."""
    rows: list[dict[str, Any]] = []
    queue = iter(users)

    async def worker() -> None:
        nonlocal rows
        for user in queue:
            rows.extend(snapshot_rows(user, await client.read_state(user), time.time()))
            if len(rows) >= _ROWS_PER_FRAME:
                part(pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA))
                rows = []

    await in_workers(worker, min(concurrency, len(users)))
    part(pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA))


async def in_workers(worker: Callable[[], Coroutine[Any, Any, None]], count: int) -> None:
    """``count`` copies of ``worker`` at once (at least one), sharing whatever queue it takes from."""
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, count)):
                group.create_task(worker())
    except* StopRunError as stops:
        # one stop, not a group of them: the callers handle a stop like any other request's
        raise stops.exceptions[0] from None


async def read_snapshot(client: FrigadeClient, users: list[str], concurrency: int) -> pl.DataFrame:
    """The state Frigade has now for ``users``, as snapshot rows, read by ``concurrency`` workers."""
    frames: list[pl.DataFrame] = []
    await _read_states(client, users, concurrency, frames.append)
    return pl.concat(frames)


async def read_current(client: FrigadeClient, users: list[str], concurrency: int) -> StateFrames:
    """The state Frigade has now for ``users``, as remembered state: each frame read is turned into it
    at once, so the whole snapshot of every user is never held beside it."""
    flows: list[pl.DataFrame] = []
    steps: list[pl.DataFrame] = []

    def keep(frame: pl.DataFrame) -> None:
        state = from_snapshot(frame)
        flows.append(state.flows)
        steps.append(state.steps)

    await _read_states(client, users, concurrency, keep)
    return StateFrames(pl.concat(flows), pl.concat(steps))


async def replan_baseline(job: Job, analysis: Analysis, client: FrigadeClient) -> StateFrames:
    """A plan made again under other rules starts from the state Frigade holds now: read back for the
    users an earlier plan may have touched (the others are still in the initial state, and a read
    would count them as active). What is read is also the snapshot of those the new plan leaves alone."""
    users = set(analysis.targets.flows["user_id"].unique().to_list()) & maybe_touched(job)
    snap = await read_snapshot(client, sorted(users), job.settings.users_at_once)
    job.folder.create()
    job.folder.write_part("snapshot_parts", job.attempt, snap)
    return from_snapshot(snap)


def maybe_touched(job: Job) -> set[str]:
    """Users with an outcome in a superseded plan, or handed to a sender before its last stop."""
    touched: set[str] = set()
    for entry in job.run.superseded:
        old = RunFolder(Path(entry.folder))
        touched |= set(old.outcomes()["user_id"].unique().to_list())
        reserved = int(old.read_json("dispatch.json").get("reserved_through", -1))
        if reserved >= 0 and old.path("plan.parquet").exists():
            order = user_order(old.read_parquet("plan.parquet"))
            touched |= {u for u, i in order.items() if i <= reserved}
    return touched
