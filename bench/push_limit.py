"""Benchmark 1, push at the limit: the job's push stage against an emulator that throttles at R.

For each R: an emulator with ``--rate-limit R --latency-ms 50``, and ``frigade.push.push`` through a
``FrigadeClient(rate=R)`` (what ``frigade-migrate backfill --rate R`` runs) sending R x (duration + 1)
writes, so the run lasts about ``duration`` seconds. Figures per R:
- achieved rate: writes completed after the first second / the time from then to the last completion
  (the first second is the limiter's initial full window, a burst that would flatter the figure);
  target >= 95 % of R;
- 429s seen by the emulator (target 0) and its busiest one-second window of arrivals (target <= R);
- run length (target >= 20 s), p50 / p99 HTTP latency, client CPU per request.

    python -m bench.push_limit [--rates 50,200,500] [--duration 20] [--concurrency N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from bench._common import Figure, base_parser, percentile, run_main
from bench._push import CpuTimer, Latencies, requests_per_user, work_list
from emulator.embedded import EmbeddedEmulator
from frigade.client import FrigadeClient
from frigade.push import Outcome, push
from frigade.secret import ApiKey
from lifecycle.settings import Settings

NAME = "push_limit"
LATENCY_MS = 50.0
#: the job's own default, not this shell's environment or config file
JOB_CONCURRENCY: int = Settings.model_fields["concurrency"].default


def _client(url: str, key: str, rate: int, concurrency: int) -> FrigadeClient:
    return FrigadeClient(url, ApiKey(key), rate=rate, concurrency=concurrency)


async def _run_one(url: str, key: str, rate: int, concurrency: int, duration: float) -> dict[str, float]:
    users = max(1, round(rate * (duration + 1) / requests_per_user()))
    work = work_list(f"lim{rate}", users)
    done: list[float] = []
    statuses: dict[int | None, int] = {}

    def on_outcome(o: Outcome) -> None:
        done.append(time.monotonic())
        statuses[o.status] = statuses.get(o.status, 0) + 1

    lat = Latencies()
    async with _client(url, key, rate, concurrency) as client:
        hooked = lat.attach(client)
        t0 = time.monotonic()
        with CpuTimer() as cpu:
            summary = await asyncio.wait_for(
                push(work, client, concurrency=concurrency, on_outcome=on_outcome, on_state=lambda u, s: None),
                timeout=duration * 3 + 60,
            )
    steady = [t for t in done if t >= t0 + 1.0]
    span = (max(steady) - (t0 + 1.0)) if steady else float("nan")
    return {
        "requests": float(len(done)),
        "sent": float(summary.sent),
        "elapsed": cpu.wall,
        "rate": len(steady) / span if steady and span > 0 else float("nan"),
        "overall_rate": len(done) / cpu.wall,
        "p50_ms": percentile(lat.samples, 50) * 1000 if hooked else float("nan"),
        "p99_ms": percentile(lat.samples, 99) * 1000 if hooked else float("nan"),
        "cpu_us": cpu.cpu / max(1, len(done)) * 1e6,
        "client_429": float(statuses.get(429, 0)),
        "not_ok": float(len(done) - summary.sent),
    }


def measure(rates: Sequence[int], duration: float, concurrency: int) -> list[Figure]:
    figs: list[Figure] = []
    for rate in rates:
        with EmbeddedEmulator(rate_limit=rate, latency_ms=LATENCY_MS) as emu:
            r = asyncio.run(_run_one(emu.url, emu.public_key, rate, concurrency, duration))
            stats = emu.stats()
        throttled = int(stats["throttled"]) + int(stats["requests_by_status"].get("429", 0)) * 0
        window = int(stats["max_requests_per_second_window"])
        b = f"{NAME}[R={rate}]"
        figs += [
            Figure(
                b,
                f"R={rate}: achieved rate (after 1st s)",
                r["rate"],
                "req/s",
                f">= {0.95 * rate:g} (95% of R)",
                r["rate"] >= 0.95 * rate,
            ),
            Figure(b, f"R={rate}: 429s at the emulator", throttled, "", "0", throttled == 0),
            Figure(b, f"R={rate}: busiest 1-s window", window, "req", f"<= {rate}", window <= rate),
            Figure(
                b,
                f"R={rate}: run length",
                r["elapsed"],
                "s",
                f">= {min(20.0, duration):g}",
                r["elapsed"] >= min(20.0, duration),
            ),
            Figure(
                b, f"R={rate}: writes sent ok", int(r["sent"]), "", f"= {int(r['requests'])} (all)", r["not_ok"] == 0
            ),
            Figure(b, f"R={rate}: overall rate incl. first-second burst", r["overall_rate"], "req/s"),
            Figure(b, f"R={rate}: latency p50", r["p50_ms"], "ms"),
            Figure(b, f"R={rate}: latency p99", r["p99_ms"], "ms"),
            Figure(b, f"R={rate}: client CPU per request", r["cpu_us"], "µs"),
        ]
    return figs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rates", default="50,200,500", help="comma-separated R values (default 50,200,500)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per rate (default 20)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=JOB_CONCURRENCY,
        help=f"requests in flight, as --concurrency of the job (default: the job's, {JOB_CONCURRENCY})",
    )


def run(args: argparse.Namespace) -> list[Figure]:
    rates = [int(x) for x in str(args.rates).split(",") if x.strip()]
    duration = float(args.duration)
    if args.quick:
        rates, duration = [200], 1.5
    return measure(rates, duration, int(args.concurrency))


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 1: push at the limit", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
