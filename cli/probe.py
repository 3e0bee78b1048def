"""``frigade-migrate probe``: calibrate the rules profile against the configured API before a real
migration, and the plan's cost lines (requests, MAU, webhook deliveries)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from frigade.probe import ProbeResult
    from frigade.secret import ApiKey
    from lifecycle.settings import Settings

EXIT_OK, EXIT_INPUT, EXIT_STOPPED = 0, 2, 3


def add_probe_parser(sub: Any, parents: list[argparse.ArgumentParser] | None = None) -> None:
    p = sub.add_parser(
        "probe",
        help="calibration: a short scripted sequence on one probe user, then a reset; writes the rules profile",
        parents=parents or [],
        allow_abbrev=False,
    )
    p.set_defaults(subparser=p)
    p.add_argument("--flow", required=True, metavar="SLUG", help="a flow with at least two steps to probe")
    p.add_argument(
        "--yes", action="store_true", help="agree that the probe touches 1 MAU and fires the flow's webhooks"
    )
    p.add_argument("--out", default="rules.json", help="where to write the detected profile (default rules.json)")
    p.add_argument("--api-url", help="API base (env FRIGADE_API_URL); with neither URL nor key the embedded emulator")
    p.add_argument("--api-key", help="API key (env FRIGADE_API_KEY; never printed, logged or written)")
    p.add_argument("--user-id", help="the probe user id (default: a fresh frigade-migrate-probe-... id)")


def cmd_probe(args: argparse.Namespace) -> int:
    # imported here: building the parser must stay cheap for every other command
    from rich.console import Console

    from frigade.errors import FrigadeError
    from frigade.probe import PROBE_REQUESTS, probe_user_id
    from frigade.rules import PROFILES, SETTINGS
    from lifecycle.settings import resolve

    err, out = Console(stderr=True), Console()
    if not args.yes:
        err.print(
            f"probe sends {PROBE_REQUESTS} requests for one new user to flow {args.flow}: that is 1 monthly active "
            "user and fires the flow's webhooks; run again with --yes to go ahead",
            soft_wrap=True,
        )
        return EXIT_INPUT
    settings = resolve({"api_url": args.api_url, "api_key": args.api_key})
    user_id = args.user_id or probe_user_id()
    out.print(
        f"probing flow {args.flow} with user {user_id} ({PROBE_REQUESTS} requests, 1 MAU, the flow's webhooks fire); "
        "the user is reset at the end"
    )
    try:
        result = asyncio.run(_probe(settings, args.flow, user_id, err))
    except FrigadeError as exc:
        err.print(f"[red]probe failed:[/] {exc}")
        return EXIT_STOPPED if exc.stops_run else EXIT_INPUT
    Path(args.out).write_text(result.rules.to_json(), encoding="utf-8")
    for name in SETTINGS:
        out.print(f"  {name}: {getattr(result.rules, name)}")
    same = f"the built-in profile {result.rules.name!r}" if result.rules.name in PROFILES else "no built-in profile"
    out.print(f"detected rules match {same}; written to {args.out} (use --rules {args.out})")
    out.print(f"probe user {user_id} was reset (NOT_STARTED_FLOW); delete it in Frigade if you wish")
    return EXIT_OK


async def _probe(settings: Settings, flow: str, user_id: str, err: Any) -> ProbeResult:
    from frigade.client import FrigadeClient
    from frigade.probe import probe

    async with _endpoint(settings, err) as (url, key), FrigadeClient(url, key, rate=settings.rate) as client:
        return await probe(client, flow, user_id)


@contextlib.asynccontextmanager
async def _endpoint(settings: Settings, err: Any) -> AsyncIterator[tuple[str, ApiKey | None]]:
    if not settings.embedded:
        yield settings.api_url or "https://api.frigade.com", settings.api_key
        return
    from emulator.embedded import EmbeddedEmulator
    from frigade.secret import ApiKey

    err.print("[yellow]No FRIGADE_API_KEY or FRIGADE_API_URL configured: probing the embedded emulator.[/]")
    with EmbeddedEmulator() as emu:
        yield emu.url, ApiKey(emu.public_key)


def cost_rows(plan: pl.DataFrame) -> list[tuple[str, Any]]:
    """The plan's cost to the account, as the dry run prints it."""
    from transforms.cost import plan_cost, webhook_deliveries

    cost = plan_cost(plan)
    rows: list[tuple[str, Any]] = [("webhook deliveries (one per write of a webhook type)", cost["webhook_deliveries"])]
    rows += [(f"  webhooks: {event}", n) for event, n in webhook_deliveries(plan).items()]
    return rows
