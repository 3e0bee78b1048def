"""The ``frigade-migrate`` command: the typer app, its commands, and ``main``, which turns every
expected error into one line and an exit code (``lifecycle.exitcodes.ExitCode``): 0 success; 1
failures past --max-failures or reconciliation mismatches; 2 bad input or usage (nothing sent); 3
stopped by the API (bad key, MAU cap) or the API unreachable past --outage-window; 130 interrupted
(Ctrl-C, SIGTERM). 3 and 130 are resumable."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Annotated, Any

import typer
from rich.markup import escape

# typer vendors click since 0.2x: these are its usage errors, which main answers as argparse did
from typer._click.exceptions import NoArgsIsHelpError, NoSuchOption, UsageError

from cli import options as o
from cli.console import err, out
from cli.probe import probe
from cli.run import backfill, debugging, plan, sync
from frigade.errors import StopRunError, TransientError
from lifecycle.exitcodes import ExitCode
from lifecycle.heap import lean_collector
from transforms.schema import InputError

PROG = "frigade-migrate"

app = typer.Typer(
    name=PROG,
    epilog="Exit codes: 0 success; 1 failures past --max-failures or reconciliation mismatches; 2 bad input "
    "or usage (nothing sent); 3 stopped by the API or the API unreachable (resumable); 130 interrupted "
    f"(resumable). `{PROG} COMMAND --help` describes each command.",
    # plain click help: every line greppable and pasteable, no boxes
    rich_markup_mode=None,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _guarded(command: Callable[..., int]) -> Callable[..., int]:
    """Every expected error of a command as one line on stderr and its exit code; the traceback too
    with --debug or FRIGADE_MIGRATE_DEBUG=1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        debug = debugging(bool(kwargs.get("debug")))
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            if debug:
                err.print_exception()
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return ExitCode.INPUT
        except (StopRunError, TransientError) as exc:
            # the API refused or could not be reached before a run began (plan's or probe's catalog
            # read): nothing was sent, and the message says why
            if debug:
                err.print_exception()
            err.print(f"[bold red]stopped:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return ExitCode.STOPPED
        except KeyboardInterrupt:
            # before a run had anything to keep (a run's own Ctrl-C ends it cleanly, see lifecycle.interrupts)
            err.print("[red]interrupted[/]")
            return ExitCode.INTERRUPTED

    return run


def _command(function: Callable[..., int], name: str, summary: str, **settings: Any) -> None:
    # short_help: click would cut the docstring at its first sentence or 45 characters in the list
    app.command(name, short_help=summary, **settings)(_guarded(function))


def audit(
    snapshot_a: Annotated[str, typer.Argument(metavar="SNAPSHOT_A", help="snapshot.parquet or a run folder")],
    snapshot_b: Annotated[str, typer.Argument(metavar="SNAPSHOT_B", help="a later snapshot.parquet or run folder")],
    out_dir: Annotated[
        str | None,
        typer.Option(
            "--out", help="folder for audit.parquet, audit.md and audit.html (default audits/<time>)", metavar="DIR"
        ),
    ] = None,
    debug: o.Debug = False,
) -> int:
    """State diff between two snapshots (or a run folder and a later one): per user, flow and step field
    changes, a summary and a report."""
    from lifecycle.audit import main as audit_main

    return audit_main(snapshot_a, snapshot_b, out_dir)


def inspect(
    export: Annotated[
        str,
        typer.Argument(
            metavar="EXPORT",
            help="one export: a CSV, TSV, Parquet, JSONL or JSON file (or a .gz or .zip of them), a folder, "
            "a glob or a bucket URL",
        ),
    ],
    preset: Annotated[
        str | None, typer.Option(help="read the events with this preset instead of the one that fits best")
    ] = None,
    mapping: Annotated[
        str | None, typer.Option(help="YAML mapping applied over the preset (or over the best fit)", metavar="FILE")
    ] = None,
    catalog: Annotated[
        str | None,
        typer.Option(
            help="flows and steps to hold the export's ids against (default: the bundled sample when no API is "
            "configured)",
            metavar="FILE",
        ),
    ] = None,
    rows: Annotated[int, typer.Option(help="rows to sample (at least 1)", min=1)] = 1000,
    debug: o.Debug = False,
) -> int:
    """Detect an export's shape, propose a preset, show the column profile and a sample of the events it
    would produce."""
    from cli.inspect import main as inspect_main

    return inspect_main(export, preset=preset, mapping=mapping, catalog=catalog, rows=rows)


def emulator(ctx: typer.Context) -> int:
    """Run the local Frigade stand-in server in the foreground (its own options: emulator --help)."""
    from emulator.server import main as emulator_main

    return emulator_main(ctx.args, prog=f"{PROG} emulator")


def _version(value: bool) -> None:
    if value:
        out.print(f"{PROG} {version('frigade-migrate')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _top(
    show_version: Annotated[
        bool | None,
        typer.Option(
            "--version", help="print the version and exit", callback=_version, is_eager=True, show_default=False
        ),
    ] = None,
) -> None:
    """Move users' onboarding progress from another tool's export into Frigade."""


_command(backfill, "backfill", "one-off migration: load, validate, plan, push, snapshot, reconcile")
_command(sync, "sync", "like backfill, but sends only what changed since the last finished sync")
_command(plan, "plan", "dry run: what would be sent, to how many users, how long it takes")
_command(audit, "audit", "state diff between two snapshots or run folders")
_command(inspect, "inspect", "detect an export's shape, propose a preset, show a sample of its events")
# the emulator's own parser reads every word after the command, --help included
_command(
    emulator,
    "emulator",
    "run the local Frigade stand-in in the foreground",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
_command(probe, "probe", "calibration: one probe user's scripted sequence, then a reset; writes the rules profile")


def _usage_error(exc: UsageError, argv: Sequence[str]) -> int:
    """A usage error as every other expected error is answered: one line on stderr, saying what is
    wrong (and the option meant, when one is close), then the usage of the command that was mistyped
    and where its options are listed."""
    ctx = exc.ctx
    if isinstance(exc, NoArgsIsHelpError):
        # no command at all: the help is the answer, on stderr as a usage error's is
        err.print(exc.format_message(), highlight=False, markup=False)
        return ExitCode.INPUT
    if isinstance(exc, NoSuchOption):
        message = f"unrecognized arguments: {_unrecognized(exc, argv)}"
    else:
        message = exc.format_message()
    if ctx is not None:
        pieces = " ".join(ctx.command.collect_usage_pieces(ctx))
        listed = "command" if isinstance(ctx.command, typer.core.TyperGroup) else "option"
        path = ctx.command_path
        message = f"{message.rstrip('.')} (usage: {path} {pieces}; `{path} --help` lists every {listed})"
    err.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    return ExitCode.INPUT


def _unrecognized(exc: NoSuchOption, argv: Sequence[str]) -> str:
    """The unknown option as typed, with its value when the option it is close to takes one."""
    words = list(argv)
    at = next((i for i, w in enumerate(words) if w.split("=", 1)[0] == exc.option_name), None)
    typed = words[at] if at is not None else exc.option_name
    if not exc.possibilities:
        return typed
    meant = exc.possibilities[0]
    param = next(
        (p for p in (exc.ctx.command.params if exc.ctx else []) if meant in getattr(p, "opts", [])),
        None,
    )
    takes_value = param is not None and not getattr(param, "is_flag", True)
    if takes_value and at is not None and "=" not in typed and at + 1 < len(words) and words[at + 1][:1] != "-":
        typed += " " + words[at + 1]
    return f"{typed} (did you mean {meant}?)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code is returned, never raised, for in-process callers."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        # from before Prefect is imported: its hundred thousand objects set off full collections
        with lean_collector():
            result = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except UsageError as exc:
        return _usage_error(exc, args)
    except typer.Abort:
        err.print("[red]interrupted[/]")
        return ExitCode.INTERRUPTED
    return int(result) if isinstance(result, int) else ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
