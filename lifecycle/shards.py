"""Sharded runs: exports of any size in bounded memory.

A run over more than ``SHARD_ROWS`` rows (or given ``--shards N``) splits its users by a hash of their
normalised id into N shards. The export is read once: its events, mapped and encoded, stream into one
Parquet folder per shard (``split/shard=<k>/``). Every event of a user is in one shard (whitespace twins
too, since the hash is of the stripped id), so each shard is analysed, planned, pushed, snapshotted and
reconciled on its own, in ``shards/<k>/``, a run folder of its own; only one shard's frames are held at
a time. Every shard is planned before anything is sent, so an input error in the last shard still stops
the run before its first request.

The run's own run.json adds its shards up: the row accounting, the outcomes, the verdict. Its
snapshot, quarantine and reconciliation are the shards' streamed into one file each, and the state
folder is written by the run once every shard has finished, never by a shard.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from frigade.catalog import Catalog
from frigade.errors import StopRunError
from frigade.rules import Rules
from lifecycle.catalogs import catalog_record
from lifecycle.execute import record_stop
from lifecycle.existing import sampled_users
from lifecycle.exports import (
    analyze_split,
    estimated_rows,
    plan_exports,
    resolve_path,
    sources_of,
    split_events,
)
from lifecycle.finish import RunResult, copy_known_snapshot, exit_code_of, remember
from lifecycle.job import SHARDS_DIR, SPLIT_DIR, Job
from lifecycle.prepare import check_state_dir, checked_inputs, refuse_plan
from lifecycle.progress import PlanProgress
from lifecycle.record import Attempt, RunRecord
from lifecycle.report import progress_lost, render
from lifecycle.runfolder import key_check, recorded_settings
from lifecycle.settings import Settings, failure_limit
from transforms.accounting import accounting_closes
from transforms.analysis import QUARANTINE_COLUMNS, Prepared, plan_requests, rows_of
from transforms.cost import webhook_deliveries
from transforms.outcomes import per_flow
from transforms.quarantine import catalog_hints, examples
from transforms.spec import SourceMapping
from transforms.sync import StateFrames

#: rows per shard when the count is chosen from the export's size: such a shard plans in about 2 GiB
#: (bench/RESULTS.md), and a run of fewer rows is one shard, planned as before
SHARD_ROWS = 5_000_000
_SPLIT_DONE = f"{SPLIT_DIR}/done.json"


def shard_count(given: int | None, rows: int) -> int:
    return given if given is not None else max(1, math.ceil(rows / SHARD_ROWS))


def open_shards(job: Job) -> list[Job]:
    """The shards of the run, split from the export on its first attempt; none for a run of one
    shard (planned as a run always was). Refuses, as the run would, a resume under other inputs or
    plan settings, and a sync from a state folder another run left unfinished."""
    for p in job.exports:
        resolve_path(p)  # before the row estimate opens them
    if job.sharded and job.run.status is None:
        # its planning stopped (a bad row in a shard, a kill) before the run was planned: nothing was
        # sent, and the run starts over, from the files as they are now
        _discard(job)
    if job.run.shards is None:
        if job.resuming:
            return []
        n = shard_count(job.settings.shards, estimated_rows(job.exports))
        if n == 1:
            return []
        _begin(job, n)
    elif job.sharded:
        checked_inputs(job, resuming=True)
    return job.shard_jobs()


def _discard(job: Job) -> None:
    for name in (SPLIT_DIR, SHARDS_DIR):
        shutil.rmtree(job.folder.path(name), ignore_errors=True)
    job.run = RunRecord()


def _begin(job: Job, shards: int) -> None:
    check_state_dir(job)
    run = job.run
    run.inputs = checked_inputs(job, resuming=False)
    run.run_id, run.kind, run.created_at = job.folder.root.name, job.kind, datetime.now(UTC).isoformat()
    run.shards = shards
    run.settings = recorded_settings(job.settings) | {"full": job.full, "from_current": job.from_current}
    run.key_check = key_check(job.settings.api_key)
    job.folder.create()
    job.save()


def split(job: Job, catalog: Catalog) -> None:
    """Cut the export's events into the run's shards, once: a resume keeps the split."""
    if job.folder.path(_SPLIT_DONE).exists():
        return
    dest = job.folder.path(SPLIT_DIR)
    shutil.rmtree(dest, ignore_errors=True)
    split_events(job.exports, job.mapping(), catalog, job.run.shards or 1, dest)
    job.folder.write_json({"shards": job.run.shards}, _SPLIT_DONE)


@dataclass
class Preview:
    """What the dry run shows of a plan: sums over the shards, never a whole plan held at once."""

    counts: dict[str, int]
    quarantine: pl.DataFrame
    quarantine_reasons: dict[str, int]
    webhooks: dict[str, int]
    #: the plan's first requests
    first: pl.DataFrame
    #: the target state of the export's first users by id (``lifecycle.existing``)
    sample: StateFrames | None = None


def preview(
    paths: Sequence[Path], mapping: SourceMapping, catalog: Catalog, settings: Settings, rules: Rules
) -> Preview:
    """The dry run's plan of the exports, shard by shard when they are big (or ``--shards`` says so),
    split into a temporary folder removed at the end; nothing is written or sent."""
    for p in paths:
        resolve_path(p)
    n = shard_count(settings.shards, estimated_rows(paths))
    if n == 1:
        whole = plan_exports(paths, mapping, catalog, mode=settings.mode, rules=rules)
        refuse_plan(whole.counts, whole.quarantine, settings.max_quarantined)
        return Preview(
            whole.counts,
            whole.quarantine,
            whole.quarantine_reasons,
            webhook_deliveries(whole.plan),
            whole.plan.head(10),
            sampled_users(StateFrames(whole.expected_flows, whole.expected_steps)),
        )
    parts: list[Prepared] = []
    hooks: list[dict[str, int]] = []
    samples: list[StateFrames] = []
    with tempfile.TemporaryDirectory(prefix="frigade-migrate-split-") as tmp, PlanProgress(n) as bar:
        split_events(paths, mapping, catalog, n, Path(tmp))
        bar.split_done()
        for k in range(n):
            analysis = analyze_split(paths, mapping, catalog, Path(tmp), k, rules=rules)
            part = plan_requests(analysis, mode=settings.mode, rules=rules)
            hooks.append(webhook_deliveries(part.plan))
            # only what the preview shows is kept of each shard's plan; the rest goes before the next
            # (a copy: a slice of a frame keeps the whole frame's buffers alive)
            first = pl.from_dicts(part.plan.head(10).to_dicts(), schema=part.plan.schema)
            samples.append(sampled_users(StateFrames(part.expected_flows, part.expected_steps)))
            parts.append(replace(part, plan=first, expected_flows=_EMPTY, expected_steps=_EMPTY))
            del analysis, part
            bar.shard_done(k)
    counts = _sum(p.counts for p in parts)
    _count_rows_without_events(counts, paths, mapping)
    quarantine = pl.concat([p.quarantine for p in parts])
    refuse_plan(counts, quarantine, settings.max_quarantined)
    head = pl.concat([p.plan for p in parts], how="diagonal_relaxed").head(10)
    webhooks = {event: sum(h[event] for h in hooks) for event in hooks[0]}
    sample = sampled_users(StateFrames(*(pl.concat(frames) for frames in zip(*samples, strict=True))))
    return Preview(counts, quarantine, _sum(p.quarantine_reasons for p in parts), webhooks, head, sample)


_EMPTY = pl.DataFrame()


def _count_rows_without_events(counts: dict[str, int], paths: Sequence[Path], mapping: SourceMapping) -> None:
    """Rows that gave no event (a wide row with no progress) are in no shard: the export's own row
    count says how many there are, and they count as dropped."""
    rows_in = sum(rows_of(s.scan) for s in sources_of(paths, mapping))
    counts["rows_dropped"] = counts.get("rows_dropped", 0) + rows_in - counts.get("rows_in", 0)
    counts["rows_in"] = rows_in


# ---------------------------------------------------------------- adding the shards up


def _sum(dicts: Iterable[Mapping[str, int] | None]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d or {})
    # most first, ties by name: the order a run of one shard gives
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def _concat(job: Job, shards: Sequence[Job], name: str) -> None:
    """The shards' ``name`` streamed into the run's own (a shard without one adds nothing)."""
    files = [s.folder.path(name) for s in shards if s.folder.path(name).exists()]
    if files:
        job.folder.sink_parquet(name, pl.scan_parquet(files, missing_columns="insert"))


def record_sharded_plan(job: Job, shards: Sequence[Job], catalog: Catalog) -> None:
    """The run's plan record: its shards' added up; refuses (exit 2) a plan from which not one row
    can be migrated, as a run of one shard does."""
    records = [s.run for s in shards]
    run = job.run
    counts = _sum(r.counts for r in records)
    _count_rows_without_events(counts, job.exports, job.mapping())
    run.counts = counts
    run.accounting_closes = accounting_closes(counts)
    _concat(job, shards, "quarantine.parquet")
    quarantine = _quarantine(job)
    refuse_plan(counts, quarantine, job.settings.max_quarantined)
    run.catalog = catalog_record(catalog)
    run.rules = records[0].rules
    run.quarantine_reasons = _sum(r.quarantine_reasons for r in records)
    run.quarantine_examples = examples(quarantine)
    run.catalog_hints = catalog_hints(quarantine, {f.slug: list(f.step_ids) for f in catalog.active})
    run.dropped_events = _sum(r.dropped_events for r in records)
    run.requests_by_action = _sum(r.requests_by_action for r in records)
    run.webhook_deliveries = _sum(r.webhook_deliveries for r in records)
    existing = [r.existing_state for r in records if r.existing_state]
    if existing:
        # each shard read its own users (lifecycle.prepare.starting_state): the run's are their sum
        run.existing_state = {
            "policy": existing[0]["policy"],
            **_sum({k: v for k, v in e.items() if k != "policy"} for e in existing),
        }
        run.conflict_users = sorted(u for r in records for u in r.conflict_users or [])[:20] or None
    if run.status is None:
        run.status = "planned"
    job.save()
    if job.state_dir is not None:
        job.state_dir.mark_unfinished(job.folder.root)


def _quarantine(job: Job) -> pl.DataFrame:
    path = job.folder.path("quarantine.parquet")
    if path.exists():
        return pl.read_parquet(path)
    return pl.DataFrame(schema=dict.fromkeys(QUARANTINE_COLUMNS, pl.String))


def say_shard_done(shard: Job, status: str | None) -> None:
    """One line as each shard a worker pushed ends (workers show no bars); None: never started."""
    if status is None:
        line = f"shard {(shard.shard or 0) + 1}/{shard.run_shards}: not started (the run stopped first)"
    else:
        run = shard.folder.read_record()
        sent = sum(a.sent or 0 for a in run.attempts[-1:])
        line = f"shard {(shard.shard or 0) + 1}/{shard.run_shards}: {status}, {sent} requests sent"
    Console(stderr=True).print(line, highlight=False)


def finish_sharded(job: Job, attempt: Attempt, elapsed_s: float, stop: StopRunError | None = None) -> RunResult:
    """The run's end, over its finished (or stopped) shards: their verdicts added up, the run's status
    judged over all of its users, the state folder written once, the report of the whole run."""
    shards = job.shard_jobs()
    records = [s.run for s in shards]
    run = job.run
    _add_up_verdicts(run, records)
    stopped = next((r for r in records if r.status == "stopped"), None)
    interrupted = next((r for r in records if r.status == "interrupted"), None)
    last_attempts = attempts_since(records, attempt.started_at)
    attempt.finished_at = datetime.now(UTC).isoformat()
    attempt.elapsed_s = round(elapsed_s, 3)
    attempt.sent = sum(a.sent or 0 for a in last_attempts)
    # the stop that came first says why the run stopped: a shard's own (the MAU cap, a bad key), else
    # this process's (a Ctrl-C, which interrupted the shards), else a shard's interrupt
    if stopped is not None or (stop is None and interrupted is not None):
        first = stopped or interrupted
        assert first is not None
        run.status, run.stop_message, run.stop_exit_code = first.status, first.stop_message, first.stop_exit_code
        attempt.stopped_by = next((a.stopped_by for a in last_attempts if a.stopped_by), None)
    elif stop is not None or any(r.status not in ("succeeded", "failed") for r in records):
        # stopped between shards (a Ctrl-C as one ended): the shards not pushed wait for the resume
        record_stop(job, attempt, stop or StopRunError("stopped before every shard was pushed"))
    else:
        limit = failure_limit(job.settings.max_failures, (run.counts or {}).get("users", 0))
        failed = (run.failed_users or 0) > limit or (run.unexplained_mismatches or 0) > 0
        failed = failed or progress_lost(run.as_dict())
        run.status = "failed" if failed else "succeeded"
    for name in ("snapshot.parquet", "reconcile.parquet"):
        _concat(job, shards, name)
    job.save()
    if job.state_dir is not None and not run.stopped:
        for shard in shards:
            remember(shard, run.run_id or "")
        copy_known_snapshot(job)
    summary = run.as_dict()
    report = render(summary, per_flow=_per_flow(shards), mismatch_sample=_mismatch_sample(job))
    job.folder.write_text("report.md", report)
    return RunResult(exit_code_of(job), str(job.folder.root), summary, report)


def attempts_since(records: Sequence[RunRecord], started_at: str) -> list[Attempt]:
    """The shards' attempts of the run's attempt that began at ``started_at``: a shard the run did
    not reach this time keeps an earlier attempt, whose requests this one did not send."""
    return [r.attempts[-1] for r in records if r.attempts and r.attempts[-1].started_at >= started_at]


_VERDICT_SUMS = (
    "failed_users",
    "mismatches",
    "unexplained_mismatches",
    "mismatched_users",
    "users_sent",
    "users_not_reached",
    "users_differing",
    "users_matching",
)


def _add_up_verdicts(run: RunRecord, records: Sequence[RunRecord]) -> None:
    run.outcomes = _sum(r.outcomes for r in records)
    run.failure_reasons = _sum(r.failure_reasons for r in records)
    run.targeting = _sum(r.targeting for r in records)
    for name in _VERDICT_SUMS:
        setattr(run, name, sum(getattr(r, name) or 0 for r in records))
    # a shard the run stopped before has no verdict: its users are unfinished
    never = sum((r.counts or {}).get("users", 0) for r in records if not r.attempts)
    run.users_not_reached = (run.users_not_reached or 0) + never


def _per_flow(shards: Sequence[Job]) -> list[dict[str, Any]]:
    frames = [
        pl.DataFrame(per_flow(s.folder.read_parquet("plan.parquet"), s.folder.read_parquet("expected_flows.parquet")))
        for s in shards
        if s.folder.path("plan.parquet").exists()
    ]
    frames = [f for f in frames if f.height]
    if not frames:
        return []
    return pl.concat(frames).group_by("flow_slug").agg(pl.all().sum()).sort("flow_slug").to_dicts()


def _mismatch_sample(job: Job) -> list[dict[str, Any]]:
    path = job.folder.path("reconcile.parquet")
    return pl.scan_parquet(path).head(20).collect().to_dicts() if path.exists() else []
