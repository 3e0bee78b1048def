"""The Prefect flows: a table of contents over ``lifecycle`` (a run's life cycle) and ``transforms``.

extract + transform (analyse, plan) -> load (push, one task per batch of users, sharing one client and
its limiter) -> snapshot + reconcile -> report (file + Prefect artifacts).
"""

from __future__ import annotations

# first: a deployment loads this file as a script of its own, not as ``flows.backfill``, and the run's
# allocator settings (set on import of ``flows``) take effect only before polars loads
import flows  # noqa: F401

# isort: split
import asyncio
import io
import sys
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar, cast

import polars as pl
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Cancelled, Failed
from prefect.utilities.annotations import quote
from rich.console import Console

from flows.cluster import cluster_runner, on_cluster, share_prefect_api, storage_problem
from frigade.catalog import Catalog
from frigade.client import FrigadeClient
from frigade.errors import StopRunError
from frigade.push import PushSummary
from lifecycle.budget import DaskStore, ShardBudget
from lifecycle.catalogs import load_catalog
from lifecycle.execute import (
    Work,
    batches,
    begin_attempt,
    exit_code_of_stop,
    fill_missing_snapshots,
    journal_for,
    push_batch,
    record_stop,
    replan_work,
    work_for,
)
from lifecycle.exitcodes import ExitCode
from lifecycle.finish import RunResult, finish_run
from lifecycle.heap import push_heap
from lifecycle.job import Job
from lifecycle.params import BackfillParams, Kind, SyncParams
from lifecycle.preflight import check_target
from lifecycle.prepare import Starting, analyze_run, plan_run, starting_state
from lifecycle.progress import LogProgress, PlanProgress, PushProgress
from lifecycle.record import STOPPED_STATUSES, Attempt
from lifecycle.remote import Endpoint, relay_stop, shard_client
from lifecycle.report import summary_rows
from lifecycle.runfolder import DispatchJournal, RunFolder, check_run_target, inputs_unchanged
from lifecycle.session import notice, open_session
from lifecycle.settings import Settings
from lifecycle.shards import finish_sharded, open_shards, record_sharded_plan, say_shard_done, split
from transforms.analysis import Analysis
from transforms.schema import InputError

#: how a run flow ends: its result, or a Failed / Cancelled state carrying it
Ending = dict[str, Any] | State[dict[str, Any]]
#: push tasks running at once: a new batch starts while another drains its last users
PARALLEL_BATCHES = 2

#: a flow run a console command started: its output is that command's (Prefect's console logs hidden)
_from_console: ContextVar[bool] = ContextVar("from_console", default=False)

P = ParamSpec("P")
R = TypeVar("R")


def call_unwalked(task: Task[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``task(*args, **kwargs)``, its arguments handed over without Prefect walking them for futures
    (they hold none). Walking a batch's work (maps of every user) cost O(users) per batch, so
    O(users^2) per run. The task itself gets the values, unwrapped."""
    call = cast(Callable[..., R], task)
    return call(*(quote(a) for a in args), **{k: quote(v) for k, v in kwargs.items()})


@task(name="load-validate", cache_policy=NO_CACHE)
def analyze_task(job: Job, catalog: Catalog) -> Analysis | None:
    return analyze_run(job, catalog)


@task(name="read-state-to-plan-against", cache_policy=NO_CACHE)
async def read_baseline_task(job: Job, analysis: Analysis, client: FrigadeClient) -> Starting | StopRunError:
    """The users' state, or the stop that ended the reads (the MAU cap, a bad key): returned, as a push
    batch's is, so that the flow run logs it in one line rather than as this task's traceback."""
    try:
        return await starting_state(job, analysis, client)
    except StopRunError as stop:
        return stop


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(job: Job, analysis: Analysis, catalog: Catalog, baseline: Starting) -> dict[str, int]:
    return plan_run(job, analysis, catalog, baseline).counts


@task(name="push-batch", cache_policy=NO_CACHE)
async def push_batch_task(
    job: Job, work: Work, batch: pl.DataFrame, client: FrigadeClient, journal: DispatchJournal, progress: PushProgress
) -> PushSummary | StopRunError:
    """The batch's summary, or the stop that ended it: a stop (the MAU cap, a bad key, an outage past
    its window, Ctrl-C) is how a run is meant to end early, not a failure of this task."""
    try:
        return await push_batch(job, work, batch, client, journal, on_outcome=progress.advance)
    except StopRunError as stop:
        return stop


@task(name="snapshot-reconcile-report", cache_policy=NO_CACHE)
def finish_task(job: Job, attempt: Attempt, elapsed_s: float) -> RunResult:
    return finish_run(job, attempt, elapsed_s)


@task(name="split-into-shards", cache_policy=NO_CACHE)
def split_task(job: Job, catalog: Catalog) -> None:
    split(job, catalog)


@task(name="add-up-shards", cache_policy=NO_CACHE)
def finish_sharded_task(job: Job, attempt: Attempt, elapsed_s: float, stop: StopRunError | None) -> RunResult:
    return finish_sharded(job, attempt, elapsed_s, stop)


async def run_job(job: Job) -> RunResult | None:
    """The whole run; None when the API stopped it before anything was planned (nothing to report)."""
    async with open_session(job, get_run_logger()) as client:
        try:
            await plan_stage(job, client)
        except StopRunError as exc:
            job.run.stop_message, job.run.stop_exit_code = str(exc), exit_code_of_stop(exc)
            return None
        return await push_stage(job, client)


async def plan_stage(job: Job, client: FrigadeClient) -> None:
    """Analyse and plan into the run folder, shard by shard when the run is sharded (every shard is
    planned before anything is sent); a resume keeps the plans it has."""
    say = log_line(job)
    if say is not None:
        say(f"plan: analysing {len(job.exports)} export file(s)")
    catalog = await load_catalog(job.catalog_source, client)
    client.raise_if_stopped()
    shards = open_shards(job)
    if not shards:
        await plan_one(job, catalog, client)
        return
    with PlanProgress(len(shards)) as bar:
        split_task(job, catalog)
        bar.split_done()
        planned = []
        for k, shard in enumerate(shards):
            planned.append(await plan_one(shard, catalog, client))
            bar.shard_done(k)
    if any(planned) or job.run.status is None:
        record_sharded_plan(job, shards, catalog)


async def plan_one(job: Job, catalog: Catalog, client: FrigadeClient) -> bool:
    """Plan the run (or one shard); False when a resume keeps the plan it has."""
    analysis = analyze_task(job, catalog)
    client.raise_if_stopped()
    if analysis is None:
        return False
    baseline = await read_baseline_task(job, analysis, client)
    if isinstance(baseline, StopRunError):
        raise baseline
    counts = plan_task(job, analysis, catalog, baseline)
    say = log_line(job)
    if say is not None:
        say(f"plan: {counts.get('requests_planned', 0):,} requests planned for {counts.get('users', 0):,} users")
    return True


async def push_stage(job: Job, client: FrigadeClient) -> RunResult:
    """Push what is pending and finish; a sharded run pushes its shards one after another (each
    finished on its own), stops at the first stop, and adds them up."""
    if not job.sharded:
        return await push_one(job, client)
    attempt, started = begin_attempt(job), time.monotonic()
    if on_cluster(job.settings):
        await push_on_cluster(job, client)
    else:
        for shard in job.shard_jobs():
            if client.stopped is None:
                await push_one(shard, client)
    return finish_sharded_task(job, attempt, time.monotonic() - started, client.stopped)


async def push_on_cluster(job: Job, client: FrigadeClient) -> None:
    """The shards as Prefect tasks on a Dask cluster, at most ``workers`` at once, each with its own
    client at its share of the one rate; this process relays a Ctrl-C to them as a stop."""
    shards, workers = job.shard_jobs(), job.settings.workers
    endpoint = Endpoint(client.base_url, client.api_key)
    slots = asyncio.Semaphore(workers)
    await share_prefect_api()
    with cluster_runner(job.settings) as runner:
        # starts the cluster here, in the main thread, where its workers are spawned ignoring SIGINT
        address = runner.client.scheduler.address
        if job.settings.dask_address is not None:
            # a worker that cannot see the run folder would fail every shard it takes, one by one
            problem = await asyncio.to_thread(storage_problem, runner.client, job.folder.root)
            if problem is not None:
                raise InputError(problem)
        store = DaskStore(f"frigade-migrate/{job.folder.root.resolve()}/{job.attempt}", address=address)
        budget = ShardBudget(job.settings.rate, workers, len(shards), store)

        async def one(shard: Job) -> None:
            async with slots:
                if client.stopped is not None:
                    say_shard_done(shard, None)
                    return
                future = runner.submit(push_shard_task, {"shard": shard, "endpoint": endpoint, "budget": budget})
                say_shard_done(shard, await asyncio.to_thread(future.result))

        try:
            async with asyncio.TaskGroup() as group:
                pushes = [group.create_task(one(shard)) for shard in shards]
                group.create_task(relay_stop(client, store, until=lambda: all(t.done() for t in pushes)))
        finally:
            store.close()


@task(name="push-shard", cache_policy=NO_CACHE)
async def push_shard_task(shard: Job, endpoint: Endpoint, budget: ShardBudget) -> str | None:
    """One shard, pushed and finished in a worker process: its status."""
    shard.quiet = True
    async with shard_client(shard, endpoint, budget) as client:
        result = await push_one(shard, client)
    return cast(str | None, result.summary.get("status"))


async def push_one(job: Job, client: FrigadeClient) -> RunResult:
    """Push what is pending, then finish: after a stop too, over what was done."""
    attempt, started = begin_attempt(job), time.monotonic()
    try:
        await push_pending(job, client)
        await fill_missing_snapshots(job, client)
    except* StopRunError as group:
        stop = cast(StopRunError, group.exceptions[0])
        record_stop(job, attempt, stop)
        # the client keeps its stop for the rest of the run: not the push's frames (work, batches) with it
        traceback.clear_frames(stop.__traceback__)
    say = log_line(job)
    if say is not None:
        say("finish: snapshot, reconcile, report")
    result = finish_task(job, attempt, time.monotonic() - started)
    if say is not None:
        say(f"finish: the run {result.summary.get('status')}, exit code {int(result.exit_code)}")
    return result


async def push_pending(job: Job, client: FrigadeClient) -> None:
    """Push the plan's pending requests, then what the server's answers showed must be planned again.
    The pending plan and its per-user maps are this function's alone: the finish runs without them."""
    work, journal = work_for(job), journal_for(job)
    with push_heap(), progress_bar(job, work, client) as progress:
        await push_batches(job, work, client, journal, progress)
        # flows where the server showed progress made outside the run, planned again from it
        again = replan_work(job, work)
        if again is not None:
            await push_batches(job, again, client, journal, progress)


def progress_bar(job: Job, work: Work, client: FrigadeClient) -> PushProgress:
    """The push's bar (its lines off a terminal); a sharded run's are one per shard, under one legend."""
    per_user = dict(work.pending.group_by("user_id").len().iter_rows())
    label = "push" if job.shard is None else f"shard {job.shard + 1}/{job.run_shards}"
    legend = job.shard is None or job.shard == 0
    flight = client.concurrency

    def in_flight() -> tuple[int, float]:
        return flight.in_flight, flight.p50

    say = log_line(job)
    if say is not None:
        every = job.settings.progress_every_s
        return LogProgress(
            work.pending.height,
            job.settings.rate,
            per_user,
            say,
            every_s=every,
            label=label,
            legend=legend,
            flight=in_flight,
        )
    # a shard in a worker process keeps quiet: two processes' bars would write over each other
    console = Console(file=io.StringIO()) if job.quiet else None
    return PushProgress(
        work.pending.height, job.settings.rate, per_user, console, label=label, legend=legend, flight=in_flight
    )


def log_line(job: Job) -> Callable[[str], None] | None:
    """Where a run's progress goes as lines when the output is not a terminal (a redirected output,
    cron, a Prefect worker's log), None on a terminal: the flow run's log (the Prefect UI, a worker's
    log), and stderr too under a console command, whose console shows no Prefect log but critical ones."""
    if job.quiet or Console(stderr=True).is_terminal:
        return None
    logger, console = get_run_logger(), _from_console.get()

    def say(line: str) -> None:
        logger.info(line)
        if console:
            print(line, file=sys.stderr, flush=True)

    return say


async def push_batches(
    job: Job, work: Work, client: FrigadeClient, journal: DispatchJournal, progress: PushProgress
) -> None:
    """At most PARALLEL_BATCHES push tasks at a time, a new one starting as soon as one ends. After a
    stop no batch starts and the running ones end at once (the client refuses to send); every outcome
    is flushed before the stop is raised, so the report sees them all."""
    slots = asyncio.Semaphore(PARALLEL_BATCHES)
    stops: list[StopRunError] = []

    async def one(batch: pl.DataFrame) -> None:
        async with slots:
            if client.stopped is None:
                result = await call_unwalked(push_batch_task, job, work, batch, client, journal, progress)
                if isinstance(result, StopRunError):
                    stops.append(result)

    async with asyncio.TaskGroup() as group:
        for batch in batches(job, work):
            group.create_task(one(batch))
    if stops:
        raise stops[0]
    # a stop that came before any batch could start (a Ctrl-C while planning) ends the run the same way
    client.raise_if_stopped()


@flow(name="frigade-migrate-backfill", validate_parameters=True)
async def backfill_flow(params: BackfillParams) -> Ending:
    """Migrate exports into Frigade. The key comes from FRIGADE_API_KEY or the Prefect Secret block
    named by ``params.api_key_block``: never from a parameter, which Prefect would store."""
    return await _run("backfill", params)


@flow(name="frigade-migrate-sync", validate_parameters=True)
async def sync_flow(params: SyncParams) -> Ending:
    """Send only what changed since the last finished run remembered in ``params.state_dir``."""
    return await _run("sync", params)


async def _run(kind: Kind, params: BackfillParams) -> Ending:
    settings = await settings_for_flow(params)
    job = Job.open(params, settings, kind)
    # a deployment's run too: never finish a run folder's plan on another API than it was made for
    check_run_target(job.folder.root, job.settings.target, job.settings.api_key)
    await check_target(job.settings)
    if kind == "sync" and params.run_dir is None and not job.from_current:
        earlier = await resume_unfinished_sync(job, params)
        if earlier is not None and earlier["exit_code"] not in (ExitCode.OK, ExitCode.FAILURES):
            return _ending(earlier)
    return _ending(await _conclude(job, await run_job(job)))


async def resume_unfinished_sync(job: Job, params: BackfillParams) -> dict[str, Any] | None:
    """A sync not told its run folder whose state folder holds one that did not finish (a scheduled
    sync stopped by an outage, say) resumes that one first, so that it plans from the state that one
    leaves: its result, or None when there is none. When that one's exports have changed since it was
    planned it cannot be resumed as it was: the run stops (exit 2) saying how to go on."""
    earlier = job.state_dir.unfinished_run() if job.state_dir is not None else None
    if earlier is None or not RunFolder(earlier).exists:
        return None  # none, or gone: the plan stops on the marker, naming it
    record = RunFolder(earlier).read_record()
    if not inputs_unchanged(record):
        raise InputError(
            f"the sync in {earlier} did not finish, and its exports have changed since it was planned, so it "
            "cannot be resumed as it was; run this sync once with --from-current (a deployment: parameter "
            "from_current: true), which plans against the state Frigade has now"
        )
    # a console command's console shows no Prefect log; a worker's log shows it once
    warn = notice(get_run_logger().warning) if _from_console.get() else get_run_logger().warning
    warn(f"the sync in {earlier} did not finish: resuming it first, then this sync")
    exports = [str(p["path"]) for p in record.inputs or []] or params.exports
    first = Job.open(params.model_copy(update={"run_dir": str(earlier), "exports": exports}), job.settings, "sync")
    check_run_target(first.folder.root, job.settings.target, job.settings.api_key)
    return await _conclude(first, await run_job(first))


async def _conclude(job: Job, result: RunResult | None) -> dict[str, Any]:
    """A run's result: its exit code, folder and status (the run's report published as artifacts)."""
    if result is None:
        message = job.run.stop_message or "stopped by the API"
        code = int(job.run.stop_exit_code or exit_code_of_stop(None))
        return {"exit_code": code, "run_dir": str(job.folder.root), "status": "stopped", "message": message}
    await _publish(result)
    status = result.summary.get("status")
    ended = {"exit_code": int(result.exit_code), "run_dir": result.run_dir, "status": status}
    # why it stopped and how to resume, in the flow run's state too (a worker's log, the Prefect UI)
    stopped = status in STOPPED_STATUSES and job.run.stop_message
    return ended | ({"message": job.run.stop_message} if stopped else {})


def _ending(result: dict[str, Any]) -> Ending:
    """The flow run's state says how the run ended (a stop is Failed, an interrupt Cancelled, in the
    Prefect UI too); its data is the result either way."""
    code = result["exit_code"]
    if code == ExitCode.OK:
        return result
    why = result.get("message") or f"the run ended {result.get('status')}, exit code {code}: see its report.md"
    if code == ExitCode.INTERRUPTED:
        return Cancelled(message=why, data=result)
    return Failed(message=why, data=result)


async def run_from_console(params: BackfillParams) -> dict[str, Any]:
    """The backfill (or, given SyncParams, the sync) a console command starts: its result, whatever
    state the flow run ended in. An error the run raised is raised again here."""
    flow_fn: Any = sync_flow if isinstance(params, SyncParams) else backfill_flow
    _from_console.set(True)
    state = await flow_fn(params, return_state=True)
    result = await state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return cast(dict[str, Any], result)


async def _publish(result: RunResult) -> None:
    key = "frigade-migrate-" + result.summary.get("kind", "run")
    await acreate_markdown_artifact(result.report, key=key + "-report", description="frigade-migrate run report")
    await acreate_table_artifact(
        [{"measure": k, "value": "" if v is None else str(v)} for k, v in summary_rows(result.summary)],
        key=key + "-summary",
        description="frigade-migrate run summary",
    )


async def settings_for_flow(params: BackfillParams) -> Settings:
    """The flow's parameters over environment over config file; the key from a Secret block if named."""
    given = params.given()
    if params.api_key_block:
        given["api_key"] = await secret_from_block(params.api_key_block)
    return Settings.resolve(given, params.config_file, given_as="parameter")


async def secret_from_block(name: str) -> str:
    from prefect.blocks.system import Secret

    block = cast("Secret[Any]", await Secret.aload(name))
    return str(block.get())


@flow(name="frigade-migrate-audit", validate_parameters=True)
async def audit_flow(snapshot_a: str, snapshot_b: str, out: str | None = None) -> dict[str, Any]:
    """State diff between two snapshots or run folders, published as a markdown artifact."""
    from lifecycle.audit import write_audit

    root, summary, md = write_audit(snapshot_a, snapshot_b, out)
    await acreate_markdown_artifact(md, key="frigade-migrate-audit", description="frigade-migrate state audit")
    return {"audit_dir": str(root), **summary}
