"""Benchmark 8, more than one core: the whole sharded backfill with ``--workers 2`` (its shards pushed
from a Dask LocalCluster of two processes) against ``--workers 1`` (the shards one after another, in
the job's own process), in the same run, against the same emulator.

The emulator runs on a core budget of its own (pinned to the last CPU with ``sched_setaffinity``; the
job may use every CPU), throttling at R with 50 ms of latency, so that the job, not the server,
decides how fast the push goes. R is set high (default 3000/s), and each client's ``--concurrency``
(default 128) too, for the job's own CPU to be the limit (each worker's client has its own).
One Prefect server is started for the whole benchmark (as a deployment would have). The export is
whole_job's (5 state-changing writes per user), sized for about ``--seconds`` at R.

Figures, for each worker count: the whole job's wall time (planning, the cluster's start, the push,
the snapshots, everything a user waits for), the push's rate at the server, 429s, the busiest
one-second window (the budget is shared: it must stay <= R), writes sent twice; then the ratio of
requests per second of the whole job, ``--workers 2`` over ``--workers 1``.

    python -m bench.workers [--rate 3000] [--seconds 20] [--shards 4] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from bench._common import Figure, base_parser, run_child, run_main
from bench._push import requests_per_user
from bench.whole_job import CATALOG, LATENCY_MS, write_export
from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import prefect_server, quiet_prefect_env

NAME = "workers"


def push_rate(run_dir: Path) -> tuple[float, int]:
    """(accepted requests per second between the first and the last, accepted requests), over every
    shard of the run."""
    parts = sorted(run_dir.glob("**/outcomes/*.parquet"))
    done = pl.concat([pl.read_parquet(p) for p in parts]).filter(pl.col("outcome") == "sent")
    at = done.get_column("at")
    span = float(at.max()) - float(at.min())  # type: ignore[arg-type]
    return ((done.height - 1) / span if span > 0 else float("nan")), done.height


def _pin(pid: int) -> str:
    """Pin ``pid`` (and the threads it has) to the last CPU; returns what was done."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
        os.sched_setaffinity(tid, {cpus[-1]})
    return f"pinned to CPU {cpus[-1]} of {len(cpus)}"


def measure(rate: int, seconds: float, shards: int, concurrency: int, tmp: Path) -> list[Figure]:
    figs: list[Figure] = []
    users = max(8, round(rate * seconds / requests_per_user()))
    export = tmp / "export.csv"
    planned = write_export(export, users)
    home = tmp / "prefect-home"
    home.mkdir()
    rates: dict[int, float] = {}
    with prefect_server(home) as api:
        env = {k: "" for k in os.environ if k.startswith("FRIGADE_")} | quiet_prefect_env(home)
        env["PREFECT_API_URL"] = api
        with EmbeddedEmulator(catalog=CATALOG, rate_limit=rate, latency_ms=LATENCY_MS) as emu:
            pinned = _pin(emu.pid)
            for workers in (1, 2):
                emu.reset()
                run_dir = tmp / f"run-{workers}"
                cmd = ["cli", "backfill", str(export), "--catalog", str(CATALOG), "--api-url", emu.url]
                cmd += ["--rate", str(rate), "--run-dir", str(run_dir), "--state-dir", str(tmp / f"state-{workers}")]
                cmd += ["--shards", str(shards), "--workers", str(workers), "--concurrency", str(concurrency)]
                job = run_child(cmd, tmp, env=env | {"FRIGADE_API_KEY": emu.public_key})
                stats = emu.stats()
                achieved, sent = push_rate(run_dir) if job.code == 0 else (float("nan"), 0)
                rates[workers] = sent / job.wall_s if job.wall_s else 0.0
                b = f"{NAME}[workers={workers}]"
                window = int(stats["max_requests_per_second_window"])
                figs += [
                    Figure(b, f"workers={workers}: backfill exit code", job.code, "", "0", job.code == 0),
                    Figure(b, f"workers={workers}: requests sent", sent, "", f"= {planned}", sent == planned),
                    Figure(
                        b,
                        f"workers={workers}: 429s at the emulator",
                        int(stats["throttled"]),
                        "",
                        "0",
                        int(stats["throttled"]) == 0,
                    ),
                    Figure(b, f"workers={workers}: busiest 1-s window", window, "req", f"<= {rate}", window <= rate),
                    Figure(
                        b,
                        f"workers={workers}: writes sent twice",
                        int(stats["writes_unchanged"]),
                        "",
                        "0",
                        int(stats["writes_unchanged"]) == 0,
                    ),
                    Figure(b, f"workers={workers}: push rate at the server", achieved, "req/s"),
                    Figure(b, f"workers={workers}: whole job wall time", job.wall_s, "s"),
                    Figure(b, f"workers={workers}: whole job requests/s (sent / wall time)", rates[workers], "req/s"),
                    Figure(b, f"workers={workers}: job CPU (process and children)", job.cpu_s, "s"),
                ]
    ratio = rates[2] / rates[1] if rates.get(1) else float("nan")
    figs.append(
        Figure(
            f"{NAME}[ratio]",
            f"whole job requests/s, --workers 2 / --workers 1 ({shards} shards, R={rate}, emulator {pinned})",
            ratio,
            "x",
        )
    )
    return figs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=int, default=3000, help="R: --rate and the emulator's throttle (default 3000)")
    p.add_argument("--seconds", type=float, default=20.0, help="push length at R to size the export for (default 20)")
    p.add_argument("--shards", type=int, default=4, help="--shards of both runs (default 4)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=128,
        help="--concurrency of each client (default 128: at 50 ms, 32 in flight would cap a client at 640/s)",
    )


def run(args: argparse.Namespace) -> list[Figure]:
    rate, seconds = int(args.rate), float(args.seconds)
    if args.quick:
        rate, seconds = 100, 2.0
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        return measure(rate, seconds, int(args.shards), int(args.concurrency), Path(tmp))


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 8: more than one core", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
