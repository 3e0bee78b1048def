"""Benchmark 11, memory flat in the number of users: `frigade-migrate backfill` of a small and a large
export (3,000 and 20,000 users by default) of the real-account shape (``bench.real_account``), in one
run, against an emulator with no latency and no limit (``--rate 5000``: the job goes as fast as this
machine lets it, which only shortens the run).

The job's RSS is sampled every 0.2 s with the wall clock, and the run's outcomes say when the push
began and ended (their first and last times), so each size gives its peak over the whole job (exact,
from ``wait4``) and its peak during the push alone; the plan before and the reconciliation after are
the rest. Target (issue 24): the large backfill's peak <= 1.2x the small one's.

    python -m bench.push_memory [--users 3000,20000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from bench._common import REPO_ROOT, Figure, base_parser, run_main
from bench.real_account import account, write_users
from emulator.embedded import EmbeddedEmulator

NAME = "push_memory"


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _backfill(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, list[tuple[float, float]]]:
    """(exit code, exact peak RSS in MiB, (wall time, RSS MiB) samples every 0.2 s)."""
    samples: list[tuple[float, float]] = []
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = _rss_mib(proc.pid)
            if rss is not None:
                samples.append((time.time(), rss))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return proc.returncode, usage.ru_maxrss / 1024, samples


def _push_span(run_dir: Path) -> tuple[float, float]:
    at = pl.scan_parquet(run_dir / "outcomes" / "*.parquet").select(pl.col("at").min().alias("a"), pl.col("at").max())
    first, last = at.collect().row(0)
    return float(first), float(last)


def measure(sizes: Sequence[int], seed: int, tmp: Path) -> list[Figure]:
    figs: list[Figure] = []
    peaks: list[float] = []
    with account(tmp) as (catalog, parsed, job_env):
        env = {**os.environ, **job_env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        for users in sizes:
            export = tmp / f"export-{users}.csv"
            write_users(parsed, export, users, seed)
            run_dir = tmp / f"run-{users}"
            with EmbeddedEmulator(catalog=catalog) as emu:
                cmd = [sys.executable, "-m", "cli", "backfill", str(export), "--catalog", str(catalog)]
                cmd += ["--api-url", emu.url, "--rate", "5000", "--run-dir", str(run_dir)]
                cmd += ["--state-dir", str(tmp / f"state-{users}")]
                code, peak, samples = _backfill(cmd, env | {"FRIGADE_API_KEY": emu.private_key}, tmp)
            first, last = _push_span(run_dir) if code == 0 else (0.0, 0.0)
            during = max((rss for t, rss in samples if first <= t <= last), default=float("nan"))
            before = max((rss for t, rss in samples if t < first), default=float("nan"))
            after = max((rss for t, rss in samples if t > last), default=float("nan"))
            b = f"{NAME}[{users}]"
            figs += [
                Figure(b, f"{users:,} users: backfill exit code", code, "", "0", code == 0),
                Figure(b, f"{users:,} users: peak RSS, whole job", peak, "MiB"),
                Figure(b, f"{users:,} users: peak RSS before the push (plan)", before, "MiB"),
                Figure(b, f"{users:,} users: peak RSS during the push", during, "MiB"),
                Figure(b, f"{users:,} users: peak RSS after the push (finish)", after, "MiB"),
            ]
            peaks.append(peak)
            print(f"{users} users: peak {peak:.0f} MiB (push {during:.0f}, finish {after:.0f})", flush=True)
    ratio = peaks[-1] / peaks[0]
    figs.append(
        Figure(
            NAME,
            f"peak RSS, {sizes[-1]:,} users / {sizes[0]:,} users",
            ratio,
            "x",
            "<= 1.2",
            ratio <= 1.2,
        )
    )
    return figs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", default="3000,20000", help="the small and the large size (default 3000,20000)")


def run(args: argparse.Namespace) -> list[Figure]:
    sizes = [int(x) for x in str(args.users).split(",") if x.strip()]
    if args.quick:
        sizes = [100, 400]
    with tempfile.TemporaryDirectory(prefix="bench-push-memory-") as tmp:
        return measure(sizes, int(args.seed), Path(tmp))


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 11: memory flat in the number of users", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
