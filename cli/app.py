"""The ``frigade-migrate`` command. Exit codes: 0 success; 1 failures past --max-failures or
reconciliation mismatches; 2 bad input or usage (nothing sent); 3 stopped by the API (bad key, MAU cap)
or the API unreachable past --outage-window; 130 interrupted (Ctrl-C, SIGTERM). 3 and 130 are resumable."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.console import run_interruptible
from frigade.errors import StopRunError, TransientError
from lifecycle.report import reconciliation_line
from transforms.schema import InputError

EXIT_OK, EXIT_INPUT, EXIT_STOPPED = 0, 2, 3
#: set to 1 to show the traceback of expected errors, like --debug
DEBUG_ENV = "FRIGADE_MIGRATE_DEBUG"
# soft wrap: a message stays one line however narrow the terminal, so it can be grepped and pasted
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

#: long-shape column flags -> mapping fields
COLUMN_FLAGS = {
    "user_col": "user",
    "group_col": "group",
    "flow_col": "flow",
    "step_col": "step",
    "action_col": "action",
    "time_col": "time",
    "data_col": "data",
    "event_id_col": "event_id",
}


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


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("exports", nargs="+", metavar="EXPORT", help="CSV, TSV, Parquet or JSONL export files")
    p.add_argument("--preset", help="built-in source shape (see `frigade-migrate inspect`); default: long")
    p.add_argument("--mapping", help="YAML mapping for shapes no preset covers, or to override a preset's parts")
    p.add_argument(
        "--catalog",
        help="flows and their ordered steps: a YAML/JSON file, or 'api' (default: api, "
        "or the bundled sample on the embedded emulator)",
    )
    p.add_argument(
        "--api-url", help="API base (env FRIGADE_API_URL); with neither URL nor key the embedded emulator is started"
    )
    p.add_argument("--api-key", help="API key (env FRIGADE_API_KEY; never printed, logged or written)")
    p.add_argument(
        "--rate", type=float, help="requests per second, never exceeded in any one-second window (default 20)"
    )
    p.add_argument("--concurrency", type=int, help="most requests in flight (default 32)")
    p.add_argument(
        "--mode",
        choices=["state", "history"],
        help="state (default): fewest requests reproducing "
        "each user's final state; history: every de-duplicated state event in order",
    )
    p.add_argument("--run-dir", help="this run's folder (default runs/<run-id>); an existing one is resumed")
    p.add_argument("--max-failures", help="fail (exit 1) above this many rejected users, N or P%% (default 0)")
    p.add_argument("--no-created-at", action="store_true", help="do not send the source event's time as createdAt")
    p.add_argument(
        "--outage-window",
        type=float,
        metavar="SECONDS",
        help="ride out an unreachable API for this long, every sender paused, before stopping with exit 3 "
        "(default 300; 0: a refused connection is a failed attempt of that user)",
    )
    p.add_argument("--config", help="settings file (default ./frigade-migrate.yaml when present)")
    p.add_argument(
        "--rules",
        metavar="PROFILE|FILE",
        help="which reading of Frigade's state rules to plan, push and reconcile with: sdk (default), legacy, "
        "or the file `frigade-migrate probe` writes",
    )
    p.add_argument("--timezone", help="zone of naive times in the export, e.g. UTC or Europe/Paris")
    p.add_argument("--time-format", help="iso, epoch_s, epoch_ms, epoch_us or a strftime pattern")
    for flag, fieldname in COLUMN_FLAGS.items():
        p.add_argument(
            "--" + flag.replace("_", "-"), dest=flag, help=f"column holding the {fieldname.replace('_', ' ')}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frigade-migrate",
        description="Move users' onboarding progress from another tool's export into Frigade.",
        epilog="Exit codes: 0 success; 1 failures past --max-failures or reconciliation mismatches; 2 bad input "
        "or usage (nothing sent); 3 stopped by the API or the API unreachable (resumable); 130 interrupted "
        "(resumable). `frigade-migrate COMMAND --help` describes each command.",
        allow_abbrev=False,
    )
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument(
        "--debug", action="store_true", help=f"show the traceback of expected errors too (or {DEBUG_ENV}=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, parents=[common], allow_abbrev=False)
        # so that a typo is answered with this subcommand's usage, not the top level's
        p.set_defaults(subparser=p)
        return p

    backfill = add("backfill", "one-off migration: load, validate, plan, push, snapshot, reconcile")
    _run_options(backfill)
    backfill.add_argument(
        "--state-dir",
        default="state",
        help="where the state this run leaves is remembered, so later syncs start from it (default state/, "
        "one sub-folder per API; not used by a backfill on the embedded emulator)",
    )
    sync = add("sync", "like backfill, but sends only what changed since the last finished sync")
    _run_options(sync)
    sync.add_argument(
        "--state-dir",
        default="state",
        help="where the last finished sync's state is kept (default state/, one sub-folder per API)",
    )
    sync.add_argument("--full", action="store_true", help="ignore the remembered state: plan every user as a backfill")
    sync.add_argument(
        "--from-current",
        action="store_true",
        help="plan against the state read from the API (when others also write to Frigade)",
    )
    _run_options(add("plan", "dry run: what would be sent, to how many users, how long it takes"))
    audit = add("audit", "state diff between two snapshots or run folders")
    audit.add_argument("a", metavar="SNAPSHOT_A", help="snapshot.parquet or a run folder")
    audit.add_argument("b", metavar="SNAPSHOT_B", help="a later snapshot.parquet or run folder")
    audit.add_argument("--out", help="folder for audit.parquet, audit.md and audit.html (default audits/<time>)")
    p = add("inspect", "detect an export's shape, propose a preset, show a sample of its events")
    p.add_argument("export", help="one CSV, TSV, Parquet or JSONL export file")
    p.add_argument("--preset", help="read the events with this preset instead of the one that fits best")
    p.add_argument("--mapping", help="YAML mapping applied over the preset (or over the best fit)")
    p.add_argument(
        "--catalog",
        help="flows and steps to hold the export's ids against (default: the bundled sample when no API is configured)",
    )
    p.add_argument("--rows", type=int, default=1000, help="rows to sample (default 1000)")
    sub.add_parser("emulator", help="run the local Frigade stand-in in the foreground", add_help=False)
    from cli.probe import add_probe_parser

    add_probe_parser(sub, [common])
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from lifecycle.settings import load_config_file, resolve

    flags = {
        "api_url": args.api_url,
        "api_key": args.api_key,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "mode": args.mode,
        "catalog": args.catalog,
        "preset": args.preset,
        "mapping": args.mapping,
        "max_failures": args.max_failures,
        "send_created_at": False if args.no_created_at else None,
        "rules": args.rules,
        "outage_window_s": args.outage_window,
    }
    return resolve(flags, config=load_config_file(args.config))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {v: getattr(args, k) for k, v in COLUMN_FLAGS.items() if getattr(args, k)}
    if args.timezone:
        o["timezone"] = args.timezone
    if args.time_format:
        o["time_format"] = args.time_format
    return o


def cmd_plan(args: argparse.Namespace) -> int:
    from lifecycle.catalogs import local_catalog
    from lifecycle.exports import plan_exports
    from lifecycle.job import Job
    from lifecycle.params import BackfillParams
    from transforms.accounting import accounting_closes
    from transforms.quarantine import catalog_hints, examples

    settings = _settings(args)
    params = BackfillParams(
        exports=args.exports, run_dir=args.run_dir or "runs/plan-preview", mapping_overrides=_overrides(args)
    )
    job = Job.open(params, settings, "plan")
    catalog = local_catalog(job.catalog_source) or asyncio.run(_api_catalog(settings))
    prepared = plan_exports(job.exports, job.mapping(), catalog, mode=settings.mode, rules=settings.rules_profile())
    c = prepared.counts
    seconds = c["requests_planned"] / settings.rate
    t = Table(title="frigade-migrate plan (nothing sent)", show_header=False)
    rows = [
        ("rows in", c["rows_in"]),
        ("rows planned as requests", c["rows_sent"]),
        ("rows redundant", c["rows_redundant"]),
        ("rows dropped (non-state)", c["rows_dropped"]),
        ("rows quarantined", c["rows_quarantined"]),
        ("requests planned", c["requests_planned"]),
        ("distinct users touched (each counts toward MAU)", c["users"]),
        (f"time at {settings.rate:g} req/s", _duration(seconds)),
        ("row accounting closes", accounting_closes(c)),
    ]
    from cli.probe import cost_rows

    for k, v in [*rows, *cost_rows(prepared.plan)]:
        t.add_row(k, str(v))
    out.print(t)
    if prepared.quarantine_reasons:
        where = examples(prepared.quarantine, reasons=15)
        q = Table(title="quarantine reasons")
        q.add_column("reason")
        q.add_column("rows", justify="right")
        q.add_column("first rows (file:row)", overflow="fold")
        for reason, n in list(prepared.quarantine_reasons.items())[:15]:
            q.add_row(reason, str(n), ", ".join(where.get(reason, [])))
        out.print(q)
        for hint in catalog_hints(prepared.quarantine, {f.slug: list(f.step_ids) for f in catalog.active}):
            err.print(f"[yellow]hint:[/] {hint}", highlight=False)
    first = Table(title="first requests")
    cols = ["user_id", "flow_slug", "seq", "action", "step_id", "created_at"]
    for col in cols:
        first.add_column(col)
    for r in prepared.plan.head(10).select(cols).iter_rows():
        first.add_row(*("" if v is None else str(v) for v in r))
    out.print(first)
    return EXIT_OK


async def _api_catalog(settings: Any) -> Any:
    from frigade.client import FrigadeClient
    from lifecycle.catalogs import CatalogSource, load_catalog

    async with FrigadeClient(settings.api_url or "https://api.frigade.com", settings.api_key, rate=settings.rate) as c:
        return await load_catalog(CatalogSource("api"), c)


def _duration(seconds: float) -> str:
    h, rem = divmod(round(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def cmd_backfill(args: argparse.Namespace) -> int:
    return _run_flow(args, "backfill")


def cmd_sync(args: argparse.Namespace) -> int:
    return _run_flow(args, "sync")


def _run_flow(args: argparse.Namespace, kind: str) -> int:
    from lifecycle.preflight import check_inputs

    settings = _settings(args)
    if kind == "sync" and settings.mode == "history":
        raise InputError("sync plans state only: --mode history is for backfills")
    check_inputs(args.exports, settings, _overrides(args))
    _prefect_env(_debug(args))
    if settings.embedded:
        err.print(
            "[yellow]No FRIGADE_API_KEY or FRIGADE_API_URL configured: this run goes to the embedded "
            "Frigade emulator on 127.0.0.1 (nothing leaves this machine).[/]"
        )
    if args.api_key:
        # The flow reads the key from the environment: a flow parameter would be stored by Prefect.
        os.environ["FRIGADE_API_KEY"] = args.api_key
    from flows.backfill import backfill_flow, sync_flow
    from lifecycle.params import BackfillParams, SyncParams

    fields: dict[str, Any] = {
        "exports": args.exports,
        "run_dir": args.run_dir,
        "state_dir": args.state_dir,
        "config_file": args.config,
        "mapping_overrides": _overrides(args),
        "preset": settings.preset,
        "mapping": settings.mapping,
        "catalog": settings.catalog,
        "api_url": settings.api_url,
        "rate": settings.rate,
        "concurrency": settings.concurrency,
        "max_failures": settings.max_failures,
        "send_created_at": settings.send_created_at,
        "rules": settings.rules,
        "outage_window_s": settings.outage_window_s,
    }
    if kind == "sync":
        result = run_interruptible(sync_flow(SyncParams(**fields, full=args.full, from_current=args.from_current)))
    else:
        result = run_interruptible(backfill_flow(BackfillParams(**fields, mode=settings.mode)))
    return _print_result(result)


def _print_result(result: dict[str, Any]) -> int:
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
    if run.get("state_dir"):
        out.print(f"remembered state for {run.get('state_target') or 'this API'}: {run['state_dir']}")
    out.print(reconciliation_line(run))
    if run.get("stop_message"):
        # soft_wrap: the resume command it ends with must stay one line, to be copied as it is
        err.print(f"[bold red]stopped:[/] {escape(run['stop_message'])}", soft_wrap=True)
    elif run.get("status") == "failed":
        err.print(
            f"[red]finished with failures:[/] {run.get('failed_users', 0)} users with rejected or failed requests, "
            f"{run.get('mismatches', 0)} reconciliation mismatches (see reconcile.parquet and report.md)"
        )
    return int(result["exit_code"])


def _did_you_mean(parser: argparse.ArgumentParser, extra: Sequence[str]) -> str:
    options = [o for action in parser._actions for o in action.option_strings]
    typo = next((e.split("=")[0] for e in extra if e.startswith("--")), None)
    close = difflib.get_close_matches(typo, options, n=1, cutoff=0.6) if typo else []
    return f" (did you mean {close[0]}?)" if close else ""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from emulator.server import main as emulator_main

        return emulator_main(argv[1:], prog="frigade-migrate emulator")
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        args.subparser.error(f"unrecognized arguments: {' '.join(extra)}{_did_you_mean(args.subparser, extra)}")
    try:
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "backfill":
            return cmd_backfill(args)
        if args.command == "sync":
            return cmd_sync(args)
        if args.command == "audit":
            from lifecycle.audit import main as audit_main

            return audit_main(args.a, args.b, args.out)
        if args.command == "probe":
            from cli.probe import cmd_probe

            return cmd_probe(args)
        if args.command == "inspect":
            from cli.inspect import main as inspect_main

            code: int = inspect_main(
                args.export, preset=args.preset, mapping=args.mapping, catalog=args.catalog, rows=args.rows
            )
            return code
    except InputError as exc:
        if _debug(args):
            err.print_exception()
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_INPUT
    except (StopRunError, TransientError) as exc:
        # the API refused or could not be reached before a run began (plan's or probe's catalog
        # read): nothing was sent, and the message says why
        if _debug(args):
            err.print_exception()
        err.print(f"[bold red]stopped:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        # before a run had anything to keep (a run's own Ctrl-C ends it cleanly, see lifecycle.interrupts)
        err.print("[red]interrupted[/]")
        return 130
    return EXIT_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
