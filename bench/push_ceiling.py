"""Benchmark 2, push ceiling vs peers: no rate limit, 50 ms latency, 64 requests in flight.

Three clients against the same emulator, interleaved round by round (A B C, B C A, C A B, ...) after a
warm-up, so that machine noise hits all three alike; each figure is the median over rounds, and the
ratios are of medians:
- job: ``frigade.push.push`` through ``FrigadeClient(rate=<unlimited>, concurrency=64)``, the push stage
  of ``frigade-migrate backfill --concurrency 64`` (httpx's API over the aiohttp transport);
- naive: one ``httpx.AsyncClient`` (pool of 64) with 64 workers;
- aiohttp: one ``aiohttp.ClientSession`` (``TCPConnector(limit=64)``) with 64 workers.
All send the same writes (every step of a checklist completed, then the flow, user after user, each
user's writes in order), read and parse every response, and stop at the round's deadline. The emulator
is reset between runs so each starts on an empty database.

Targets: job >= 5x naive and >= 0.8x aiohttp.

    python -m bench.push_ceiling [--seconds 8] [--rounds 5] [--concurrency 64] [--httpcore] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import httpx

from bench._common import Figure, base_parser, median, run_main
from bench._push import CpuTimer, body, requests_per_user, user_requests, work_until
from emulator.embedded import EmbeddedEmulator
from frigade.client import FrigadeClient
from frigade.push import push
from frigade.secret import ApiKey

NAME = "push_ceiling"
LATENCY_MS = 50.0
UNLIMITED = 1_000_000.0
PATH = "/v1/public/flowStates"
#: bound on users per run, far above what a round can reach
MAX_USERS = 200_000


class _Counter:
    def __init__(self) -> None:
        self.ok = 0
        self.bad = 0


async def _job(url: str, key: str, prefix: str, seconds: float, conc: int, http: str = "aiohttp") -> _Counter:
    counter = _Counter()

    def on_outcome(o: object) -> None:
        if getattr(o, "ok", False):
            counter.ok += 1
        else:
            counter.bad += 1

    wire: Any = http
    async with FrigadeClient(url, ApiKey(key), rate=UNLIMITED, concurrency=conc, http=wire) as client:
        users = work_until(prefix, time.monotonic() + seconds, MAX_USERS)
        await push(users, client, concurrency=conc, on_outcome=on_outcome, on_state=lambda u, s: None)
    return counter


async def _workers(
    seconds: float, conc: int, prefix: str, send: Callable[[dict[str, object]], Awaitable[bool]]
) -> _Counter:
    """``conc`` workers, each taking the next user and sending its writes in order, until the deadline."""
    counter = _Counter()
    deadline = time.monotonic() + seconds
    next_user = iter(range(MAX_USERS))

    async def worker() -> None:
        for n in next_user:
            if time.monotonic() >= deadline:
                return
            for user, action, step, at in user_requests(prefix, n):
                if await send(body(user, action, step, at)):
                    counter.ok += 1
                else:
                    counter.bad += 1

    await asyncio.gather(*(worker() for _ in range(conc)))
    return counter


async def _naive(url: str, key: str, prefix: str, seconds: float, conc: int) -> _Counter:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30.0) as client:

        async def send(b: dict[str, object]) -> bool:
            r = await client.post(PATH, json=b)
            json.loads(r.content)
            return r.status_code < 300

        return await _workers(seconds, conc, prefix, send)


async def _aiohttp(url: str, key: str, prefix: str, seconds: float, conc: int) -> _Counter:
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=conc)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector, timeout=timeout) as session:

        async def send(b: dict[str, object]) -> bool:
            async with session.post(PATH, json=b) as r:
                json.loads(await r.read())
                return r.status < 300

        return await _workers(seconds, conc, prefix, send)


async def _job_httpcore(url: str, key: str, prefix: str, seconds: float, conc: int) -> _Counter:
    """The job's client on httpx's own wire (httpcore), as it was before the aiohttp transport."""
    return await _job(url, key, prefix, seconds, conc, http="httpx")


CLIENTS: dict[str, Callable[[str, str, str, float, int], Awaitable[_Counter]]] = {
    "job": _job,
    "naive": _naive,
    "aiohttp": _aiohttp,
}
HTTPCORE = "job on httpcore (before)"


def measure(seconds: float, rounds: int, conc: int, httpcore: bool = False) -> list[Figure]:
    clients = dict(CLIENTS)
    if httpcore:
        clients[HTTPCORE] = _job_httpcore
    rates: dict[str, list[float]] = {k: [] for k in clients}
    cpu: dict[str, list[float]] = {k: [] for k in clients}
    errors: dict[str, int] = dict.fromkeys(clients, 0)
    names = list(clients)
    with EmbeddedEmulator(latency_ms=LATENCY_MS) as emu:
        # warm-up: the emulator's first seconds (fresh database, cold caches) are slower for whoever
        # goes first
        asyncio.run(_aiohttp(emu.url, emu.public_key, "warmup", min(2.0, seconds), conc))
        for rnd in range(rounds):
            # each round starts with a different client, so none always runs first or last
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                client = clients[name]
                emu.reset()
                with CpuTimer() as t:
                    c = asyncio.run(
                        asyncio.wait_for(
                            client(emu.url, emu.public_key, f"{name}{rnd}", seconds, conc), seconds * 4 + 60
                        )
                    )
                rates[name].append(c.ok / t.wall)
                cpu[name].append(t.cpu / max(1, c.ok + c.bad) * 1e6)
                errors[name] += c.bad
    m = {k: median(v) for k, v in rates.items()}
    vs_naive = m["job"] / m["naive"] if m["naive"] else float("inf")
    vs_aio = m["job"] / m["aiohttp"] if m["aiohttp"] else float("inf")
    b = NAME
    figs = [
        Figure(b, "job / naive httpx (median rates)", vs_naive, "x", ">= 5", vs_naive >= 5.0),
        Figure(b, "job / aiohttp (median rates)", vs_aio, "x", ">= 0.8", vs_aio >= 0.8),
    ]
    for name in clients:
        runs = ", ".join(f"{r:.0f}" for r in rates[name])
        figs.append(Figure(b, f"{name}: writes/s, median of {rounds} ({runs})", m[name], "req/s"))
    for name in clients:
        figs.append(Figure(b, f"{name}: client CPU per request (median)", median(cpu[name]), "µs"))
    figs.append(Figure(b, "failed writes (all clients)", sum(errors.values()), "", "0", sum(errors.values()) == 0))
    figs.append(Figure(b, "writes per user", requests_per_user(), ""))
    return figs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--httpcore",
        action="store_true",
        help="also run the job's client on httpx's own wire, httpcore (a 4th, context-only client: the "
        "client as it was before frigade.transport)",
    )
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per client per round (default 8)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")


def run(args: argparse.Namespace) -> list[Figure]:
    seconds, rounds = float(args.seconds), int(args.rounds)
    if args.quick:
        seconds, rounds = 1.0, 1
    return measure(seconds, rounds, int(args.concurrency), bool(args.httpcore))


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 2: push ceiling vs peers", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
