"""What a run holds while it runs: the state folder's lock, the API (or an embedded emulator), one
client with its rate limiter, and the Ctrl-C / SIGTERM watch that stops the client cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.markup import escape

from frigade.client import FrigadeClient
from frigade.secret import ApiKey
from lifecycle import interrupts
from lifecycle.job import Job
from lifecycle.settings import DEFAULT_API_URL, Settings

Say = Callable[[str], object]


class RunLog(Protocol):
    """Where a run's notices go besides the console: the Prefect run's logger, say."""

    def info(self, msg: str, /) -> object: ...

    def warning(self, msg: str, /) -> object: ...


@contextlib.asynccontextmanager
async def open_session(job: Job, log: RunLog) -> AsyncIterator[FrigadeClient]:
    async with contextlib.AsyncExitStack() as stack:
        if job.state_dir is not None:
            stack.enter_context(job.state_dir.lock())
        s = job.settings
        endpoint = api_endpoint(s, job.catalog_source.emulator_file, job.emulator_db, log.info)
        url, key = await stack.enter_async_context(endpoint)
        client = await stack.enter_async_context(client_for(s, url, key, notice(log.warning)))
        loop = asyncio.get_running_loop()

        def on_signal(why: str) -> None:
            loop.call_soon_threadsafe(client.interrupt, f"interrupted by {why}")

        # Ctrl-C / SIGTERM: the client stops sending, and the run ends as a stop does (resumable)
        stack.enter_context(interrupts.watch(on_signal, job.folder.root))
        yield client


def client_for(s: Settings, url: str, key: ApiKey | None, say: Callable[[str], None] | None = None) -> FrigadeClient:
    return FrigadeClient(
        url,
        key,
        rate=s.rate,
        concurrency=s.concurrency,
        timeout=s.timeout,
        max_attempts=s.max_attempts,
        send_created_at=s.send_created_at,
        outage_window_s=s.outage_window_s,
        notice=say,
    )


@contextlib.asynccontextmanager
async def api_endpoint(
    settings: Settings, catalog_file: str | None, db_path: Path | None, log: Say
) -> AsyncIterator[tuple[str, ApiKey | None]]:
    """The configured API, or an embedded emulator when neither a URL nor a key is configured. The
    emulator's database is kept at ``db_path`` (a temporary one without), so it can be resumed."""
    if not settings.embedded:
        yield settings.api_url or DEFAULT_API_URL, settings.api_key
        return
    from emulator.embedded import EmbeddedEmulator

    with EmbeddedEmulator(catalog=catalog_file, db_path=db_path) as emu:
        log(
            f"No FRIGADE_API_KEY or FRIGADE_API_URL configured: running against the embedded Frigade "
            f"emulator at {emu.url} (nothing leaves this machine; its database: {emu.db_path})."
        )
        yield emu.url, ApiKey(emu.public_key)


def notice(log: Say) -> Callable[[str], None]:
    """An outage and its end, said once each: to ``log`` and on the console, where the CLI shows
    no Prefect log lines but critical ones."""
    console = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:
        log(message)
        console.print(f"[yellow]{escape(message)}[/]", highlight=False)

    return say
