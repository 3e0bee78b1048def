"""Prefect flows: thin orchestration that reads like a table of contents.

extract + transform (prepare) -> load (push, one task per batch of users, sharing one client and its
limiter) -> snapshot + reconcile -> report (file + Prefect artifacts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from rich.console import Console
from rich.markup import escape

from frigade.catalog import Catalog
from frigade.client import FrigadeClient
from frigade.errors import StopRunError
from frigade.push import PushSummary
from frigade.secret import ApiKey
from lifecycle import interrupts
from lifecycle import job as J
from lifecycle.execute import Work
from lifecycle.params import BackfillParams, Kind, SyncParams
from lifecycle.pipeline import Analysis
from lifecycle.progress import PushProgress
from lifecycle.report import summary_rows
from lifecycle.runfolder import DispatchJournal
from lifecycle.settings import DEFAULT_API_URL, Settings

#: push tasks running at once: a new batch starts while another drains its last users
PARALLEL_BATCHES = 2


@task(name="load-validate", cache_policy=NO_CACHE)
def analyze_task(job: J.Job, catalog: Catalog) -> Analysis | None:
    return J.analyze_run(job, catalog)


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(
    job: J.Job, analysis: Analysis, catalog: Catalog, baseline: tuple[pl.DataFrame, pl.DataFrame] | None
) -> dict[str, int]:
    return J.plan_run(job, analysis, catalog, baseline).counts


@task(name="read-current-state", cache_policy=NO_CACHE)
async def read_current_task(job: J.Job, analysis: Analysis, client: FrigadeClient) -> tuple[pl.DataFrame, pl.DataFrame]:
    users = analysis.targets[0]["user_id"].unique().sort().to_list()
    return await J.read_baseline(client, users, job.settings.concurrency)


@task(name="read-state-to-replan", cache_policy=NO_CACHE)
async def replan_baseline_task(
    job: J.Job, analysis: Analysis, client: FrigadeClient
) -> tuple[pl.DataFrame, pl.DataFrame]:
    return await J.replan_baseline(job, analysis, client)


@task(name="push-batch", cache_policy=NO_CACHE)
async def push_batch_task(
    job: J.Job,
    work: Work,
    batch: pl.DataFrame,
    client: FrigadeClient,
    journal: DispatchJournal,
    progress: PushProgress,
) -> PushSummary | StopRunError:
    """The batch's summary, or the stop that ended it: a stop (the MAU cap, a bad key, an outage past
    its window, Ctrl-C) is how a run is meant to end early, not a failure of this task."""
    try:
        return await J.push_batch(job, work, batch, client, journal, on_outcome=progress.advance)
    except StopRunError as stop:
        return stop


@task(name="snapshot-reconcile-report", cache_policy=NO_CACHE)
def finish_task(job: J.Job, attempt: dict[str, Any], elapsed_s: float) -> J.RunResult:
    return J.finish_run(job, attempt, elapsed_s)


@contextlib.asynccontextmanager
async def api_endpoint(
    settings: Settings, catalog_file: str | None, db_path: Path | None = None
) -> AsyncIterator[tuple[str, ApiKey | None]]:
    """The configured API, or an embedded emulator when neither a URL nor a key is configured. The
    emulator's database is kept at ``db_path`` (a temporary one without), so it can be resumed."""
    if not settings.embedded:
        yield settings.api_url or DEFAULT_API_URL, settings.api_key
        return
    from emulator.embedded import EmbeddedEmulator

    with EmbeddedEmulator(catalog=catalog_file, db_path=db_path) as emu:
        get_run_logger().info(
            "No FRIGADE_API_KEY or FRIGADE_API_URL configured: running against the embedded Frigade "
            "emulator at %s (nothing leaves this machine; its database: %s).",
            emu.url,
            emu.db_path,
        )
        yield emu.url, ApiKey(emu.public_key)


def _notice(logger: Any) -> Callable[[str], None]:
    """An outage and its end, said once each: to the Prefect run's log (its UI) and on the console,
    where the CLI shows no Prefect log lines but critical ones."""
    console = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:
        logger.warning(message)
        console.print(f"[yellow]{escape(message)}[/]", highlight=False)

    return say


async def run_job(job: J.Job) -> J.RunResult | None:
    """The whole run; None when the API stopped it before anything was planned (nothing to report)."""
    async with contextlib.AsyncExitStack() as stack:
        if job.state_dir is not None:
            stack.enter_context(job.state_dir.lock())
        s = job.settings
        catalog_source = s.catalog or ("api" if not s.embedded else None)
        emulator_catalog = catalog_source if catalog_source not in (None, "api") else None
        url, key = await stack.enter_async_context(api_endpoint(s, emulator_catalog, job.emulator_db))
        logger = get_run_logger()
        client = await stack.enter_async_context(
            FrigadeClient(
                url,
                key,
                rate=s.rate,
                concurrency=s.concurrency,
                timeout=s.timeout,
                max_attempts=s.max_attempts,
                send_created_at=s.send_created_at,
                outage_window_s=s.outage_window_s,
                notice=_notice(logger),
            )
        )
        # Ctrl-C / SIGTERM: the client stops sending, and the run ends as a stop does (resumable)
        loop = asyncio.get_running_loop()

        def on_signal(why: str) -> None:
            loop.call_soon_threadsafe(client.interrupt, f"interrupted by {why}")

        stack.enter_context(interrupts.watch(on_signal, job.folder.root))
        try:
            catalog = await J.load_catalog(catalog_source or "api", client)
            _raise_if_stopped(client)  # e.g. a Ctrl-C while Prefect started: analyse nothing
            analysis = analyze_task(job, catalog)
            _raise_if_stopped(client)
            if analysis is not None:
                if job.replan:
                    baseline: tuple[pl.DataFrame, pl.DataFrame] | None = await replan_baseline_task(
                        job, analysis, client
                    )
                elif job.from_current:
                    baseline = await read_current_task(job, analysis, client)
                else:
                    baseline = J.baseline_for(job)
                plan_task(job, analysis, catalog, baseline)
        except StopRunError as exc:
            job.run["stop_message"] = str(exc)
            job.run["stop_exit_code"] = J.exit_code_of_stop(exc)
            return None
        work = J.work_for(job)
        attempt = J.begin_attempt(job)
        journal = J.journal_for(job)
        started = J.now()
        try:
            per_user = dict(work.pending.group_by("user_id").len().iter_rows())
            with PushProgress(total=work.pending.height, rate=s.rate, user_requests=per_user) as progress:
                await push_batches(job, work, client, journal, progress)
            await J.fill_missing_snapshots(job, client)
        except* StopRunError as group:
            J.record_stop(job, attempt, cast(StopRunError, group.exceptions[0]))
        return finish_task(job, attempt, J.now() - started)


def _raise_if_stopped(client: FrigadeClient) -> None:
    if client.stopped is not None:
        raise type(client.stopped)(*client.stopped.args)


async def push_batches(
    job: J.Job, work: Work, client: FrigadeClient, journal: DispatchJournal, progress: PushProgress
) -> None:
    """At most PARALLEL_BATCHES push tasks at a time, a new one starting as soon as one ends. After a
    stop no batch starts and the running ones end at once (the client refuses to send); every outcome
    is flushed before the stop is raised, so the report sees them all."""
    slots = asyncio.Semaphore(PARALLEL_BATCHES)
    stops: list[StopRunError] = []

    async def one(batch: pl.DataFrame) -> None:
        async with slots:
            if client.stopped is not None:
                return
            result = await push_batch_task(job, work, batch, client, journal, progress)
            if isinstance(result, StopRunError):
                stops.append(result)

    async with asyncio.TaskGroup() as group:
        for batch in J.batches(work, job.settings.batch_requests):
            group.create_task(one(batch))
    if stops:
        raise stops[0]


async def _publish(result: J.RunResult) -> None:
    key = "frigade-migrate-" + result.summary.get("kind", "run")
    await acreate_markdown_artifact(result.report, key=key + "-report", description="frigade-migrate run report")
    await acreate_table_artifact(
        [{"measure": k, "value": "" if v is None else str(v)} for k, v in summary_rows(result.summary)],
        key=key + "-summary",
        description="frigade-migrate run summary",
    )


@flow(name="frigade-migrate-backfill", validate_parameters=True)
async def backfill_flow(params: BackfillParams) -> dict[str, Any]:
    """Migrate exports into Frigade. The key comes from FRIGADE_API_KEY or the Prefect Secret block
    named by ``params.api_key_block``: never from a parameter, which Prefect would store."""
    return await _run("backfill", params)


@flow(name="frigade-migrate-sync", validate_parameters=True)
async def sync_flow(params: SyncParams) -> dict[str, Any]:
    """Send only what changed since the last finished run remembered in ``params.state_dir``."""
    return await _run("sync", params)


async def _run(kind: Kind, params: BackfillParams) -> dict[str, Any]:
    settings = await settings_for_flow(params)
    job = J.Job.open(params, settings, kind)
    result = await run_job(job)
    if result is None:
        message = job.run.get("stop_message", "stopped by the API")
        code = job.run.get("stop_exit_code", J.EXIT_STOPPED)
        return {"exit_code": code, "run_dir": str(job.folder.root), "status": "stopped", "message": message}
    await _publish(result)
    return {"exit_code": result.exit_code, "run_dir": result.run_dir, "status": result.summary.get("status")}


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
