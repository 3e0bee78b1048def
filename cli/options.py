"""The commands' options, declared once and shared. A setting's flag, help and environment variable
come from its field in ``lifecycle.settings.Settings``; the options that are not settings (the run and
state folders, the column names of a long export) are declared here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import typer

from lifecycle.settings import Settings

#: set to 1 to show the traceback of expected errors, like --debug
DEBUG_ENV = "FRIGADE_MIGRATE_DEBUG"

#: long-shape column options -> mapping fields
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


def setting(name: str, metavar: str | None = None) -> Any:
    """The option of the setting ``name``: its flag and help as the settings declare them."""
    flag = Settings.source(name).flag
    assert flag is not None, f"{name} has no flag"
    return typer.Option(flag, help=Settings.help(name), metavar=metavar, show_default=False)


def accepted(name: str, metavar: str | None = None) -> Any:
    """A setting the dry run takes but does not use (it pushes nothing): accepted, so that a backfill's
    command line works as a plan's unchanged (README lists them as common options), and not listed in
    its help, which shows only what the dry run uses."""
    flag = Settings.source(name).flag
    assert flag is not None, f"{name} has no flag"
    return typer.Option(flag, help=Settings.help(name), metavar=metavar, show_default=False, hidden=True)


def _column(field: str) -> Any:
    return typer.Option(
        "--" + f"{field}-col".replace("_", "-"),
        help=f"column holding the {field.replace('_', ' ')}",
        metavar="COLUMN",
        show_default=False,
    )


Exports = Annotated[
    list[str],
    typer.Argument(
        metavar="EXPORT",
        help="export files, folders, globs or s3:// gs:// az:// addresses (CSV, TSV, Parquet, JSON; .gz, .zip)",
    ),
]
Preset = Annotated[str | None, setting("preset", "NAME")]
MappingFile = Annotated[str | None, setting("mapping", "FILE")]
Catalog = Annotated[str | None, setting("catalog", "FILE|api")]
ApiUrl = Annotated[str | None, setting("api_url", "URL")]
ApiKey = Annotated[str | None, setting("api_key", "KEY")]
Rate = Annotated[float | None, setting("rate", "N")]
Concurrency = Annotated[int | None, setting("concurrency", "N")]
Mode = Annotated[Literal["state", "history"] | None, setting("mode")]
MaxFailures = Annotated[str | None, setting("max_failures", "N|P%")]
MaxQuarantined = Annotated[str | None, setting("max_quarantined", "N|P%")]
NoCreatedAt = Annotated[bool, setting("send_created_at")]
Rules = Annotated[str | None, setting("rules", "PROFILE|FILE")]
Policy = Annotated[Literal["merge", "overwrite"] | None, setting("policy")]
OutageWindow = Annotated[float | None, setting("outage_window_s", "SECONDS")]
Shards = Annotated[int | None, setting("shards", "N")]
Workers = Annotated[int | None, setting("workers", "N")]
#: the dry run's push-only settings (see ``accepted``)
PlanWorkers = Annotated[int | None, accepted("workers", "N")]
PlanConcurrency = Annotated[int | None, accepted("concurrency", "N")]
PlanMaxFailures = Annotated[str | None, accepted("max_failures", "N|P%")]
PlanNoCreatedAt = Annotated[bool, accepted("send_created_at")]
PlanOutageWindow = Annotated[float | None, accepted("outage_window_s", "SECONDS")]
Config = Annotated[
    str | None,
    typer.Option(help="settings file (default ./frigade-migrate.yaml when present)", metavar="FILE"),
]
RunDir = Annotated[
    str | None,
    typer.Option(help="this run's folder (default runs/<run-id>); an existing one is resumed", metavar="DIR"),
]
Timezone = Annotated[
    str | None, typer.Option(help="zone of naive times in the export, e.g. UTC or Europe/Paris", metavar="ZONE")
]
TimeFormat = Annotated[
    str | None,
    typer.Option(
        help="how the export writes times: iso, epoch_s, epoch_ms, epoch_us or a strftime pattern", metavar="FORMAT"
    ),
]
UserCol = Annotated[str | None, _column("user")]
GroupCol = Annotated[str | None, _column("group")]
FlowCol = Annotated[str | None, _column("flow")]
StepCol = Annotated[str | None, _column("step")]
ActionCol = Annotated[str | None, _column("action")]
TimeCol = Annotated[str | None, _column("time")]
DataCol = Annotated[str | None, _column("data")]
EventIdCol = Annotated[str | None, _column("event_id")]
Debug = Annotated[
    bool,
    typer.Option("--debug", help=f"show the traceback of expected errors too (or {DEBUG_ENV}=1)", show_default=False),
]


def given_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a command's parsed options give (None: not given), by setting name."""
    given = {name: params[name] for name in [*Settings.overridable(), "api_key"] if name in params}
    # --no-created-at is the only way to give send_created_at on the command line: off, or not given
    given["send_created_at"] = False if params.get("no_created_at") else None
    return given


def mapping_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping fields the column, time zone and time format options give."""
    fields = {**COLUMN_FLAGS, "timezone": "timezone", "time_format": "time_format"}
    return {field: params[option] for option, field in fields.items() if params.get(option)}
