"""``frigade-migrate backfill``, ``sync`` and ``plan``: check the inputs before Prefect starts, then
launch the flow (backfill, sync) or prepare the plan without sending anything (plan)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli import options as o
from cli.console import err, out
from frigade.errors import FrigadeError
from lifecycle.exitcodes import ExitCode
from lifecycle.settings import DEFAULT_API_URL, Settings
from transforms.schema import InputError

if TYPE_CHECKING:
    from frigade.catalog import Catalog
    from lifecycle.job import Job
    from lifecycle.params import Kind
    from transforms.sync import StateFrames


def _prefect_env(debug: bool) -> None:
    """Prefect's temporary server takes 13-28 s to start here and times out at its default 20 s on a
    fresh database; and its telemetry only produces errors offline. Prefect's console logs show every
    expected stop (a bad key, the MAU cap, bad input) as ERROR lines with tracebacks, burying the one
    line this command prints about it: unless --debug, the console shows only critical Prefect logs
    (the Prefect server and UI still get every log; an unexpected error still ends in a traceback)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if not debug:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def debugging(debug: bool) -> bool:
    return debug or os.environ.get(o.DEBUG_ENV, "").lower() in ("1", "true", "yes")


def _settings(params: Mapping[str, Any]) -> Settings:
    return Settings.resolve(o.given_settings(params), params.get("config"))


def backfill(
    ctx: typer.Context,
    exports: o.Exports,
    preset: o.Preset = None,
    mapping: o.MappingFile = None,
    catalog: o.Catalog = None,
    api_url: o.ApiUrl = None,
    api_key: o.ApiKey = None,
    rate: o.Rate = None,
    concurrency: o.Concurrency = None,
    mode: o.Mode = None,
    run_dir: o.RunDir = None,
    max_failures: o.MaxFailures = None,
    max_quarantined: o.MaxQuarantined = None,
    no_created_at: o.NoCreatedAt = False,
    outage_window_s: o.OutageWindow = None,
    shards: o.Shards = None,
    workers: o.Workers = None,
    config: o.Config = None,
    rules: o.Rules = None,
    policy: o.Policy = None,
    state_dir: Annotated[
        str,
        typer.Option(
            help="where the state this run leaves is remembered, so later syncs start from it (default state/, "
            "one sub-folder per API; not used by a backfill on the embedded emulator)",
            metavar="DIR",
            show_default=False,
        ),
    ] = "state",
    timezone: o.Timezone = None,
    time_format: o.TimeFormat = None,
    user_col: o.UserCol = None,
    group_col: o.GroupCol = None,
    flow_col: o.FlowCol = None,
    step_col: o.StepCol = None,
    action_col: o.ActionCol = None,
    time_col: o.TimeCol = None,
    data_col: o.DataCol = None,
    event_id_col: o.EventIdCol = None,
    debug: o.Debug = False,
) -> int:
    """One-off migration: load, validate, plan, push, snapshot and reconcile, as a Prefect flow run."""
    return _run_flow(ctx.params, "backfill")


def sync(
    ctx: typer.Context,
    exports: o.Exports,
    preset: o.Preset = None,
    mapping: o.MappingFile = None,
    catalog: o.Catalog = None,
    api_url: o.ApiUrl = None,
    api_key: o.ApiKey = None,
    rate: o.Rate = None,
    concurrency: o.Concurrency = None,
    mode: o.Mode = None,
    run_dir: o.RunDir = None,
    max_failures: o.MaxFailures = None,
    max_quarantined: o.MaxQuarantined = None,
    no_created_at: o.NoCreatedAt = False,
    outage_window_s: o.OutageWindow = None,
    shards: o.Shards = None,
    workers: o.Workers = None,
    config: o.Config = None,
    rules: o.Rules = None,
    policy: o.Policy = None,
    state_dir: Annotated[
        str,
        typer.Option(
            help="where the last finished sync's state is kept (default state/, one sub-folder per API)",
            metavar="DIR",
            show_default=False,
        ),
    ] = "state",
    full: Annotated[
        bool,
        typer.Option("--full", help="ignore the remembered state: plan every user as a backfill", show_default=False),
    ] = False,
    from_current: Annotated[
        bool,
        typer.Option(
            "--from-current",
            help="plan against the state read from the API (when others also write to Frigade)",
            show_default=False,
        ),
    ] = False,
    timezone: o.Timezone = None,
    time_format: o.TimeFormat = None,
    user_col: o.UserCol = None,
    group_col: o.GroupCol = None,
    flow_col: o.FlowCol = None,
    step_col: o.StepCol = None,
    action_col: o.ActionCol = None,
    time_col: o.TimeCol = None,
    data_col: o.DataCol = None,
    event_id_col: o.EventIdCol = None,
    debug: o.Debug = False,
) -> int:
    """Like backfill, but sends only what changed since the last finished sync in the same state folder."""
    return _run_flow(ctx.params, "sync")


def _run_flow(params: Mapping[str, Any], kind: Kind) -> int:
    from flows.console import run_interruptible
    from lifecycle.preflight import check_inputs, check_target

    settings = _settings(params)
    if kind == "sync" and settings.mode == "history":
        raise InputError("sync plans state only: --mode history is for backfills")
    overrides = o.mapping_overrides(params)
    check_inputs(params["exports"], settings, overrides)
    if params["run_dir"]:
        from lifecycle.runfolder import check_run_target

        check_run_target(Path(params["run_dir"]), settings.target, settings.api_key)
    asyncio.run(check_target(settings))
    _prefect_env(debugging(params["debug"]))
    if settings.embedded:
        err.print(
            "[yellow]No FRIGADE_API_KEY or FRIGADE_API_URL configured: this run goes to the embedded "
            "Frigade emulator on 127.0.0.1 (nothing leaves this machine).[/]"
        )
    if params["api_key"]:
        # The flow reads the key from the environment: a flow parameter would be stored by Prefect.
        os.environ["FRIGADE_API_KEY"] = params["api_key"]
    from flows.backfill import run_from_console
    from lifecycle.params import BackfillParams, SyncParams

    fields: dict[str, Any] = {
        "exports": params["exports"],
        "run_dir": params["run_dir"],
        "state_dir": params["state_dir"],
        "config_file": params["config"],
        "mapping_overrides": overrides,
        **{name: getattr(settings, name) for name in Settings.overridable() if name != "mode"},
    }
    if kind == "sync":
        run: BackfillParams = SyncParams(**fields, full=params["full"], from_current=params["from_current"])
    else:
        run = BackfillParams(**fields, mode=settings.mode)
    result = run_interruptible(run_from_console(run), resume_words(sys.argv[1:], settings))
    return print_result(result)


def resume_words(words: Sequence[str], settings: Settings) -> list[str]:
    """This command's words for its printed resume command, naming the API it went to when that came
    from the environment or a config file: a resume from a shell without them must go where this run
    went (without the key too it is refused by that API at once, nothing sent). A key given as a flag
    is written as "$FRIGADE_API_KEY" by the resume command, never as itself."""
    if settings.embedded or any(w.split("=", 1)[0] == "--api-url" for w in words):
        return list(words)
    from lifecycle.runfolder import normal_target

    return [*words, "--api-url", normal_target(settings.target)]


def print_result(result: dict[str, Any]) -> int:
    """The run's summary, its folder, the reconciliation line, and why it stopped or failed."""
    from lifecycle.report import loss_line, reconciliation_line

    run_dir = Path(result["run_dir"])
    if result.get("message") and not (run_dir / "report.md").exists():
        err.print(f"[bold red]stopped before anything was planned:[/] {result['message']}")
        return int(result["exit_code"])
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    summary = report.split("\n## ")[0]
    out.print(summary)
    out.print(f"run folder: {run_dir}  (report: {run_dir / 'report.md'})")
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    for hint in run.get("catalog_hints", []):
        err.print(f"[yellow]hint:[/] {hint}", highlight=False)
    _warn_if_mostly_quarantined(run.get("counts", {}), run.get("quarantine_reasons", {}))
    if run.get("state_dir"):
        out.print(f"remembered state for {run.get('state_target') or 'this API'}: {run['state_dir']}")
    out.print(reconciliation_line(run))
    if run.get("stop_message"):
        # soft_wrap: the resume command it ends with must stay one line, to be copied as it is
        err.print(f"[bold red]stopped:[/] {escape(run['stop_message'])}", soft_wrap=True)
    elif run.get("status") == "failed":
        if run.get("failed_users") or run.get("unexplained_mismatches"):
            err.print(
                f"[red]finished with failures:[/] {run.get('failed_users', 0)} users with rejected or failed "
                f"requests, {run.get('mismatches', 0)} reconciliation mismatches (see reconcile.parquet and report.md)"
            )
        # the last line: progress left behind, which no reconciliation of what was sent shows
        lost = loss_line(run, str(run_dir / "quarantine.parquet"))
        if lost is not None:
            err.print(f"[red]{escape(lost)}[/]", soft_wrap=True, highlight=False)
    return int(result["exit_code"])


def _warn_if_mostly_quarantined(counts: Mapping[str, int], reasons: Mapping[str, int]) -> None:
    from transforms.quarantine import mostly_quarantined

    warning = mostly_quarantined(counts, reasons)
    if warning is not None:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def plan(
    ctx: typer.Context,
    exports: o.Exports,
    preset: o.Preset = None,
    mapping: o.MappingFile = None,
    catalog: o.Catalog = None,
    api_url: o.ApiUrl = None,
    api_key: o.ApiKey = None,
    rate: o.Rate = None,
    mode: o.Mode = None,
    run_dir: o.RunDir = None,
    config: o.Config = None,
    rules: o.Rules = None,
    policy: o.Policy = None,
    timezone: o.Timezone = None,
    time_format: o.TimeFormat = None,
    user_col: o.UserCol = None,
    group_col: o.GroupCol = None,
    flow_col: o.FlowCol = None,
    step_col: o.StepCol = None,
    action_col: o.ActionCol = None,
    time_col: o.TimeCol = None,
    data_col: o.DataCol = None,
    event_id_col: o.EventIdCol = None,
    concurrency: o.PlanConcurrency = None,
    max_failures: o.PlanMaxFailures = None,
    max_quarantined: o.MaxQuarantined = None,
    no_created_at: o.PlanNoCreatedAt = False,
    outage_window_s: o.PlanOutageWindow = None,
    shards: o.Shards = None,
    workers: o.PlanWorkers = None,
    debug: o.Debug = False,
) -> int:
    """Dry run: what would be sent, to how many distinct users, and how long it takes at the rate; sends nothing."""
    from cli.probe import cost_rows
    from lifecycle.job import Job
    from lifecycle.params import BackfillParams
    from lifecycle.preflight import check_target
    from lifecycle.shards import preview
    from transforms.accounting import accounting_closes, is_not_a_user
    from transforms.quarantine import catalog_hints, examples

    settings = _settings(ctx.params)
    # a bad key or URL answers in one line before the export is read, as a backfill's does
    asyncio.run(check_target(settings))
    params = BackfillParams(
        exports=exports, run_dir=run_dir or "runs/plan-preview", mapping_overrides=o.mapping_overrides(ctx.params)
    )
    job = Job.open(params, settings, "plan")
    chosen = _plan_catalog(job)
    prepared = preview(job.exports, job.mapping(), chosen, settings, settings.rules_profile())
    c = prepared.counts
    seconds = c["requests_planned"] / settings.rate
    t = Table(title="frigade-migrate plan (nothing sent)", show_header=False)
    rows = [
        ("rows in", c["rows_in"]),
        ("rows planned as requests", c["rows_sent"]),
        ("rows redundant", c["rows_redundant"]),
        ("rows not onboarding state (dropped)", c["rows_dropped"]),
        ("rows not a user to migrate", c["rows_not_a_user"]),
        ("rows of progress not migrated", c["rows_not_migrated"]),
        *([("rows with some progress not migrated", n)] if (n := c.get("rows_partly_not_migrated")) else []),
        ("requests planned", c["requests_planned"]),
        ("distinct users touched (each counts toward MAU)", c["users"]),
        (f"time at {settings.rate:g} req/s", _duration(seconds)),
        ("row accounting closes", accounting_closes(c)),
    ]
    for k, v in [*rows, *_existing_rows(settings, prepared.sample, c["users"]), *cost_rows(prepared.webhooks)]:
        t.add_row(k, str(v))
    out.print(t)
    _print_coverage(job, chosen, c["rows_in"])
    if prepared.quarantine_reasons:
        where = examples(prepared.quarantine, reasons=15)
        q = Table(title="quarantined: progress not migrated, and rows of no user to migrate")
        q.add_column("reason", overflow="fold")
        q.add_column("kind")
        q.add_column("rows", justify="right")
        q.add_column("first rows (file:row)", overflow="fold")
        for reason, n in list(prepared.quarantine_reasons.items())[:15]:
            kind = "not a user" if is_not_a_user(reason) else "not migrated"
            q.add_row(reason, kind, str(n), ", ".join(where.get(reason, [])))
        out.print(q)
        for hint in catalog_hints(prepared.quarantine, {f.slug: list(f.step_ids) for f in chosen.active}):
            err.print(f"[yellow]hint:[/] {hint}", highlight=False)
    _warn_if_mostly_quarantined(prepared.counts, prepared.quarantine_reasons)
    _warn_of_loss(prepared.counts, prepared.quarantine_reasons, examples(prepared.quarantine), settings)
    first = Table(title="first requests")
    cols = ["user_id", "flow_slug", "seq", "action", "step_id", "created_at"]
    for col in cols:
        first.add_column(col)
    for r in prepared.first.select(cols).iter_rows():
        first.add_row(*("" if v is None else str(v) for v in r))
    out.print(first)
    return ExitCode.OK


def _warn_of_loss(
    counts: Mapping[str, int], reasons: Mapping[str, int], where: Mapping[str, list[str]], settings: Settings
) -> None:
    """What a run of this plan would end with (exit 1) when it would leave known users' progress behind."""
    from lifecycle.report import loss_line

    run = {"counts": counts, "quarantine_reasons": reasons, "quarantine_examples": where, "settings": settings.public()}
    lost = loss_line(run, "the quarantine table above")
    if lost is not None:
        err.print(f"[yellow]warning:[/] a run would end exit 1: {escape(lost)}", highlight=False)


def _print_coverage(job: Job, catalog: Catalog, rows_in: int) -> None:
    """Before anything is sent: what each of the export's event names becomes."""
    from cli.inspect import coverage_table
    from lifecycle.exports import sources_of
    from transforms.analysis import export_coverage

    mapping = job.mapping()
    cov = export_coverage(sources_of(job.exports, mapping), mapping, catalog)
    out.print(coverage_table(cov, rows_in, "coverage: what each event of the export becomes"))


def _existing_rows(settings: Settings, sample: StateFrames | None, users: int) -> list[tuple[str, str]]:
    """Users who already have state: on the embedded emulator none (it starts empty); else the first
    users of the export are read (the read the SDK uses: nothing changes) and the policy worked out."""
    if settings.embedded:
        return [("users with state in Frigade", "none: the embedded emulator starts empty")]
    if sample is None or sample.flows.is_empty():
        return []
    from lifecycle.existing import sample_existing, sample_rows

    async def read() -> dict[str, int]:
        from frigade.client import FrigadeClient

        async with FrigadeClient(settings.api_url or DEFAULT_API_URL, settings.api_key, rate=settings.rate) as c:
            return await sample_existing(c, sample, settings.policy, settings.rules_profile(), settings.concurrency)

    try:
        return sample_rows(asyncio.run(read()), settings.policy, users)
    except (FrigadeError, ExceptionGroup) as exc:
        raise _read_failed(exc, settings) from exc


def _read_failed(exc: Exception, settings: Settings) -> Exception:
    """A failed read of the first users' state as the one error ``_guarded`` prints: the reads run in a
    task group, whose ExceptionGroup would otherwise end plan with a traceback."""
    from frigade.errors import RequestRejectedError, StopRunError, UnreachableError
    from lifecycle.runfolder import normal_target

    first = exc
    while isinstance(first, ExceptionGroup):
        first = first.exceptions[0]
    if not isinstance(first, FrigadeError):
        return exc  # not the API's answer: a bug, shown whole
    exc = first
    shown = normal_target(settings.target)
    if isinstance(exc, StopRunError):
        return exc
    if isinstance(exc, RequestRejectedError):
        return InputError(
            f"{shown} does not answer as the Frigade API (reading the first users' state: {exc}); check "
            "--api-url or FRIGADE_API_URL (the API base, without /v1)"
        )
    return UnreachableError(
        f"cannot read the first users' state at {shown} ({exc}); check --api-url or FRIGADE_API_URL, or "
        "plan again when the API answers; nothing was sent"
    )


def _plan_catalog(job: Job) -> Catalog:
    from lifecycle.catalogs import local_catalog

    return local_catalog(job.catalog_source) or asyncio.run(_api_catalog(job.settings))


async def _api_catalog(settings: Settings) -> Catalog:
    from frigade.client import FrigadeClient
    from lifecycle.catalogs import CatalogSource, load_catalog
    from lifecycle.preflight import check_target

    # a misspelled host is refused at once, not retried
    await check_target(settings)
    async with FrigadeClient(settings.api_url or DEFAULT_API_URL, settings.api_key, rate=settings.rate) as c:
        return await load_catalog(CatalogSource("api"), c)


def _duration(seconds: float) -> str:
    h, rem = divmod(round(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
