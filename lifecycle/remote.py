"""A shard pushed from another process (a Dask worker): its own client, at its share of the run's
rate, stopping when any shard of the run stops.

The run's process keeps the API (or the embedded emulator) and the Ctrl-C watch; it hands each shard
the API's address and key (``Endpoint``), and the run's budget (``lifecycle.budget.ShardBudget``),
which divides the rate among the shards running and counts their stops: one shard's stop (the MAU
cap, a bad key, an outage past its window) or a Ctrl-C in the run's process stops every shard, each
after flushing what it did, so the run ends as a sequential one would and resumes the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from frigade.client import FrigadeClient
from frigade.secret import ApiKey
from lifecycle.budget import CountStore, ShardBudget
from lifecycle.job import Job
from lifecycle.session import client_for

#: how often a shard looks for a stop elsewhere in the run (and the run's process for its own)
STOP_POLL_S = 0.25
#: what a shard stopped because another one did says (the run reports the stop that came first)
OTHER_STOPPED = "another shard of this run stopped first (its reason is in the run's run.json)"


@dataclass(frozen=True)
class Endpoint:
    """The API a run's shards send to: its URL and key (the key prints masked, like everywhere)."""

    url: str
    key: ApiKey | None


@contextlib.asynccontextmanager
async def shard_client(shard: Job, endpoint: Endpoint, budget: ShardBudget) -> AsyncIterator[FrigadeClient]:
    """A client for one shard, at its share of the run's rate (re-divided as shards finish), which
    stops when another shard of the run stops. On leaving, the shard counts as finished, or, when
    it stopped, its stop is counted for the others to see."""
    async with client_for(shard.settings, endpoint.url, endpoint.key) as client:
        async with budget.following(client.limiter):
            watch = asyncio.create_task(stop_when_counted(budget.store, client))
            try:
                yield client
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
        await _count_end(budget, client)


async def _count_end(budget: ShardBudget, client: FrigadeClient) -> None:
    if client.stopped is not None:
        await asyncio.to_thread(budget.store.add, "stopped")
    else:
        await asyncio.to_thread(budget.finished)


async def stop_when_counted(store: CountStore, client: FrigadeClient, poll_s: float = STOP_POLL_S) -> None:
    """Interrupt ``client`` once a stop of the run is counted (by another shard, or the run itself)."""
    while client.stopped is None:
        if await asyncio.to_thread(store.get, "stopped"):
            client.interrupt(OTHER_STOPPED)
            return
        await asyncio.sleep(poll_s)


async def relay_stop(
    client: FrigadeClient, store: CountStore, *, until: Callable[[], bool], poll_s: float = STOP_POLL_S
) -> None:
    """In the run's process: when its own client stops (a Ctrl-C, a SIGTERM) before ``until()`` says
    the shards are done, count a stop, so that every shard stops too."""
    while client.stopped is None:
        if until():
            return
        await asyncio.sleep(poll_s)
    await asyncio.to_thread(store.add, "stopped")
