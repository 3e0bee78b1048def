"""The end of a run, after its last request or its stop: snapshot, reconcile, count, remember, report."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from lifecycle.exitcodes import ExitCode
from lifecycle.job import Job
from lifecycle.prepare import maybe_touched
from lifecycle.record import Attempt
from lifecycle.report import progress_lost, render
from lifecycle.runfolder import OUTCOME_SCHEMA
from lifecycle.settings import failure_limit
from lifecycle.statedir import KNOWN_SNAPSHOT
from transforms.buckets import ROWS_PER_BUCKET, buckets_of
from transforms.outcomes import Verdict, latest_outcomes, left_at_target, per_flow, took_effect, verdict
from transforms.reconcile import last_sent_times, latest_snapshot, reconcile, targeting_summary
from transforms.snapshot import SNAPSHOT_SCHEMA
from transforms.state import FLOW_KEY
from transforms.sync import StateFrames

#: the plan's and the outcomes' columns the end of a run reads for every request at once
_PLAN_COLUMNS = ["request_id", "user_id", "flow_slug"]
_OUTCOME_COLUMNS = ["request_id", "user_id", "flow_slug", "outcome", "error_class", "message", "attempt", "at"]


@dataclass
class RunResult:
    exit_code: ExitCode
    run_dir: str
    #: run.json's content
    summary: dict[str, Any]
    report: str


def finish_run(job: Job, attempt: Attempt, elapsed_s: float, per_bucket: int = ROWS_PER_BUCKET) -> RunResult:
    """Snapshot, reconcile, count, report. Runs after a stop too, over what was done. The returned
    state is taken a bucket of about ``per_bucket`` rows at a time (``transforms.buckets``)."""
    touched = _touched_users(job)
    mismatches = _reconcile(job, touched, per_bucket)
    # a shard's state is remembered by its run, once every shard has finished (lifecycle.shards)
    remembers = job.state_dir is not None and not job.run.stopped and job.shard is None
    judged = _judge(job, attempt, touched, mismatches, hashes=remembers)
    attempt.finished_at = datetime.now(UTC).isoformat()
    attempt.elapsed_s = round(elapsed_s, 3)
    for name, value in judged.verdict.fields().items():
        setattr(job.run, name, value)
    if not job.run.stopped:
        limit = failure_limit(job.settings.max_failures, (job.run.counts or {}).get("users", 0))
        # progress left out of the plan fails the run too, unless the user accepted it
        lost = progress_lost(job.run.as_dict())
        job.run.status = "failed" if judged.verdict.failed(limit) or lost else "succeeded"
    job.save()
    if remembers and job.state_dir is not None:
        snapshot = pl.scan_parquet(job.folder.path("snapshot.parquet"))
        job.state_dir.record(snapshot, job.run.run_id or "", job.settings.target, judged.hashes, per_bucket)
        _record_base(job, judged.hashes)
        # A sync's snapshot holds only the users it planned; an audit compares full states.
        copy_known_snapshot(job)
    summary = job.run.as_dict()
    report = render(summary, per_flow=judged.per_flow, mismatch_sample=mismatches.head(20).to_dicts())
    job.folder.write_text("report.md", report)
    return RunResult(exit_code_of(job), str(job.folder.root), summary, report)


@dataclass(frozen=True)
class _Judged:
    verdict: Verdict
    hashes: tuple[pl.DataFrame, pl.DataFrame] | None
    per_flow: list[dict[str, Any]]


def _judge(job: Job, attempt: Attempt, touched: pl.Series, mismatches: pl.DataFrame, *, hashes: bool) -> _Judged:
    """What every request's latest outcome says, with the reconciliation's mismatches. The plan and
    the outcomes of every request are held only here: not beside the reconciliation or the state
    folder's fold, which take the returned state a bucket at a time."""
    plan = pl.read_parquet(job.folder.path("plan.parquet"), columns=_PLAN_COLUMNS)
    outcomes = _outcomes(job)
    this_attempt = outcomes.filter(pl.col("attempt") == job.attempt)
    attempt.sent = int((this_attempt["outcome"] == "sent").sum()) if this_attempt.height else 0
    latest = latest_outcomes(outcomes)
    del outcomes, this_attempt
    exp_flows = job.folder.read_parquet("expected_flows.parquet")
    return _Judged(
        verdict(plan, latest, mismatches, touched),
        _hashes(job, plan, latest, mismatches) if hashes else None,
        per_flow(plan, exp_flows),
    )


def exit_code_of(job: Job) -> ExitCode:
    return {
        "interrupted": ExitCode.INTERRUPTED,
        "stopped": ExitCode.STOPPED,
        "failed": ExitCode.FAILURES,
    }.get(job.run.status or "", ExitCode.OK)


def copy_known_snapshot(job: Job) -> None:
    """The state folder's full known state, as a copy in the run folder (never read whole)."""
    assert job.state_dir is not None
    known = job.state_dir.root / KNOWN_SNAPSHOT
    if known.exists():
        job.folder.write_file(KNOWN_SNAPSHOT, lambda to: shutil.copyfile(known, to))
    else:
        job.folder.write_parquet(KNOWN_SNAPSHOT, pl.DataFrame(schema=SNAPSHOT_SCHEMA))


def _reconcile(job: Job, touched: pl.Series, per_bucket: int) -> pl.DataFrame:
    """snapshot.parquet (the latest state returned per user) and reconcile.parquet, a bucket of users
    at a time: every step is per user, so the buckets' results one after the other are the whole's."""
    # lastActionAt is the migration's only where the server honours a back-dated createdAt
    honoured = job.settings.send_created_at and job.rules.honours_created_at
    plan = pl.scan_parquet(job.folder.path("plan.parquet")).select("request_id", *FLOW_KEY, "seq", "created_at")
    outcomes = job.folder.lazy_parts("outcomes", OUTCOME_SCHEMA).select("request_id", "user_id", "outcome")
    found: list[pl.DataFrame] = []
    targeting = {"user_flows": 0, "hidden_by_targeting": 0}

    def snapshots() -> Iterator[pl.DataFrame]:
        for where, snapshot, (exp_flows, exp_steps) in returned_and_expected(job, per_bucket):
            last_sent = None
            if honoured:
                sent = took_effect(outcomes.filter(where).collect())["request_id"]
                last_sent = last_sent_times(plan.filter(where).collect(), sent)
            found.append(reconcile(exp_flows, exp_steps, snapshot, touched, last_sent))
            for name, n in targeting_summary(snapshot.filter(pl.col("user_id").is_in(touched.implode()))).items():
                targeting[name] += n
            yield snapshot

    job.folder.write_parquet_frames("snapshot.parquet", snapshots(), SNAPSHOT_SCHEMA)
    job.run.targeting = targeting
    # each bucket's mismatches are sorted by user first, and the buckets are ranges of users in order
    mismatches = pl.concat(found)
    job.folder.write_parquet("reconcile.parquet", mismatches)
    return mismatches


def returned_and_expected(job: Job, per_bucket: int) -> Iterator[tuple[pl.Expr, pl.DataFrame, StateFrames]]:
    """The run's users a bucket at a time (``transforms.buckets``): the bucket's filter, the latest
    state returned for its users, and the state expected of them, each read alone."""
    parts = job.folder.lazy_parts("snapshot_parts", SNAPSHOT_SCHEMA)
    expected = [pl.scan_parquet(job.folder.path(f"expected_{n}.parquet")) for n in ("flows", "steps")]
    buckets = buckets_of(parts, per_bucket)
    for k in range(len(buckets)):
        where = buckets.where(k)
        snapshot = latest_snapshot(parts.filter(where).collect())
        yield where, snapshot, StateFrames(*(e.filter(where).collect() for e in expected))


def _outcomes(job: Job) -> pl.DataFrame:
    return job.folder.lazy_parts("outcomes", OUTCOME_SCHEMA).select(_OUTCOME_COLUMNS).collect()


def _touched_users(job: Job) -> pl.Series:
    """Users of the plan, and those of the plans a change of rules superseded that were read back."""
    read_back = sorted(maybe_touched(job)) if job.run.superseded else []
    planned = pl.scan_parquet(job.folder.path("plan.parquet")).select("user_id")
    return (
        pl.concat([planned, pl.LazyFrame({"user_id": read_back}, schema={"user_id": pl.String})])
        .unique()
        .collect()["user_id"]
    )


def remember(job: Job, run_id: str) -> None:
    """Fold a finished run's (or shard's) returned state and clean events hashes into the state folder,
    from what its folder holds."""
    assert job.state_dir is not None
    plan = pl.read_parquet(job.folder.path("plan.parquet"), columns=_PLAN_COLUMNS)
    latest = latest_outcomes(_outcomes(job))
    mismatches = job.folder.read_parquet("reconcile.parquet")
    snapshot = pl.scan_parquet(job.folder.path("snapshot.parquet"))
    hashes = _hashes(job, plan, latest, mismatches)
    job.state_dir.record(snapshot, run_id, job.settings.target, hashes)
    _record_base(job, hashes)


def _record_base(job: Job, hashes: tuple[pl.DataFrame, pl.DataFrame] | None) -> None:
    """What the export asked for, for the users the run left exactly at their target: the base of the
    next sync's merge (``transforms.merge``)."""
    if job.state_dir is None or hashes is None or not job.folder.path("source_flows.parquet").exists():
        return
    analysed, clean = hashes
    users = clean.select("user_id")
    frames = (
        job.folder.read_parquet(f"source_{n}.parquet").join(users, on="user_id", how="semi") for n in ("flows", "steps")
    )
    job.state_dir.record_base(analysed, StateFrames(*frames))


def _hashes(
    job: Job, plan: pl.DataFrame, latest: pl.DataFrame, mismatches: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(events hashes of the users this run analysed, those of them it left exactly at their target).
    A user with a request not sent (rejected, failed, held, never tried) or a mismatch is not left
    there: forgetting their hash makes the next sync plan them again, export changed or not."""
    if not job.folder.path("events_hashes.parquet").exists():
        return None
    analysed = job.folder.read_parquet("events_hashes.parquet")
    return analysed, left_at_target(analysed, plan, latest, mismatches)
