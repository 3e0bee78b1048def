"""``frigade-migrate probe``: calibrate the rules profile against the configured API before a real
migration, and the plan's cost lines (requests, MAU, webhook deliveries)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import options as o
from cli.console import err, out
from lifecycle.exitcodes import ExitCode

if TYPE_CHECKING:
    from frigade.probe import ProbeResult
    from lifecycle.settings import Settings


def probe(
    flow: Annotated[str, typer.Option(help="a flow with at least two steps to probe", metavar="SLUG")],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="agree that the probe touches 1 MAU and fires the flow's webhooks", show_default=False
        ),
    ] = False,
    out_file: Annotated[
        str, typer.Option("--out", help="where to write the detected profile", metavar="FILE")
    ] = "rules.json",
    api_url: o.ApiUrl = None,
    api_key: o.ApiKey = None,
    user_id: Annotated[
        str | None,
        typer.Option(help="the probe user id (default: a fresh frigade-migrate-probe-... id)", metavar="ID"),
    ] = None,
    debug: o.Debug = False,
) -> int:
    """Calibration: a short scripted sequence on one probe user against the configured API, then a reset;
    writes the detected rules profile for --rules FILE."""
    from frigade.errors import FrigadeError
    from frigade.probe import PROBE_REQUESTS, probe_user_id
    from frigade.rules import PROFILES, SETTINGS
    from lifecycle.settings import Settings

    if not yes:
        err.print(
            f"probe sends {PROBE_REQUESTS} requests for one new user to flow {flow}: that is 1 monthly active "
            "user and fires the flow's webhooks; run again with --yes to go ahead",
            soft_wrap=True,
        )
        return ExitCode.INPUT
    settings = Settings.resolve({"api_url": api_url, "api_key": api_key})
    user = user_id or probe_user_id()
    out.print(
        f"probing flow {flow} with user {user} ({PROBE_REQUESTS} requests, 1 MAU, the flow's webhooks fire); "
        "the user is reset at the end"
    )
    try:
        result = asyncio.run(_probe(settings, flow, user))
    except FrigadeError as exc:
        err.print(f"[red]probe failed:[/] {exc}")
        return ExitCode.STOPPED if exc.stops_run else ExitCode.INPUT
    Path(out_file).write_text(result.rules.to_json(), encoding="utf-8")
    for name in SETTINGS:
        out.print(f"  {name}: {getattr(result.rules, name)}")
    same = f"the built-in profile {result.rules.name!r}" if result.rules.name in PROFILES else "no built-in profile"
    out.print(f"detected rules match {same}; written to {out_file} (use --rules {out_file})")
    out.print(f"probe user {user} was reset (NOT_STARTED_FLOW); delete it in Frigade if you wish")
    return ExitCode.OK


async def _probe(settings: Settings, flow: str, user_id: str) -> ProbeResult:
    from frigade.client import FrigadeClient
    from frigade.probe import probe
    from lifecycle.session import api_endpoint, notice

    # the run's own choice of API: the configured one, or an embedded emulator, said on the console
    endpoint = api_endpoint(settings, None, None, notice(lambda _: None))
    async with endpoint as (url, key), FrigadeClient(url, key, rate=settings.rate) as client:
        return await probe(client, flow, user_id)


def cost_rows(webhooks: dict[str, int]) -> list[tuple[str, Any]]:
    """The plan's cost to the account in webhook deliveries (``transforms.cost.webhook_deliveries``),
    as the dry run prints it."""
    rows: list[tuple[str, Any]] = [("webhook deliveries (one per write of a webhook type)", sum(webhooks.values()))]
    rows += [(f"  webhooks: {event}", n) for event, n in webhooks.items()]
    return rows
