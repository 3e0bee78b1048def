"""Run every benchmark, one after the other, and print one summary of all targets.

    python -m bench [--quick] [--only push_limit,push_ceiling,...] [--data-dir DIR] [--json FILE]

Each benchmark starts and stops its own servers and generates its own data with the fixed seed; the big
export and the sync benchmark share ``--data-dir`` (generated once when given), where the sharded
benchmark keeps its 100M-row export too. Exit 0 when every
target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from bench import (
    big_export,
    compressed,
    fewest_requests,
    push_ceiling,
    push_limit,
    push_memory,
    real_account,
    shards,
    sync_cost,
    whole_job,
    workers,
)
from bench._common import Figure, base_parser, exit_code, print_table, write_results

BENCHES: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], list[Figure]]]
] = {
    "push_limit": ("Benchmark 1: push at the limit", push_limit.add_args, push_limit.run),
    "push_ceiling": ("Benchmark 2: push ceiling vs peers", push_ceiling.add_args, push_ceiling.run),
    "fewest_requests": ("Benchmark 3: fewest requests", fewest_requests.add_args, fewest_requests.run),
    "big_export": ("Benchmark 4: big exports", big_export.add_args, big_export.run),
    "sync_cost": ("Benchmark 5: incremental sync cost", sync_cost.add_args, sync_cost.run),
    "whole_job": ("Benchmark 6: the whole job at the limit", whole_job.add_args, whole_job.run),
    "shards": ("Benchmark 7: exports of any size in bounded memory", shards.add_args, shards.run),
    "workers": ("Benchmark 8: more than one core", workers.add_args, workers.run),
    "compressed": ("Benchmark 9: compressed exports in bounded memory", compressed.add_args, compressed.run),
    "real_account": ("Benchmark 10: a real account's shape, defaults only", real_account.add_args, real_account.run),
    "push_memory": ("Benchmark 11: memory flat in the number of users", push_memory.add_args, push_memory.run),
}


def _namespace(name: str, args: argparse.Namespace) -> argparse.Namespace:
    """The benchmark's own defaults, with the shared options of this run."""
    p = base_parser(name, "")
    BENCHES[name][1](p)
    argv = ["--seed", str(args.seed)]
    if args.quick:
        argv.append("--quick")
    if args.data_dir and name in ("big_export", "sync_cost", "shards", "compressed"):
        argv += ["--data-dir", args.data_dir]
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser("python -m bench", "Run every benchmark and print each figure with its target.")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--data-dir", help="keep and reuse the generated 10M- and 100M-row exports here")
    args = p.parse_args(None if argv is None else list(argv))
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmarks: {', '.join(unknown)}")
    started = time.monotonic()
    every: list[Figure] = []
    for name in names:
        title, _, run = BENCHES[name]
        t0 = time.monotonic()
        figures = run(_namespace(name, args))
        print_table(figures, title)
        print(f"({time.monotonic() - t0:.1f} s)", flush=True)
        every += figures
    print_table([f for f in every if f.passed is not None], "All targets")
    print(f"(all benchmarks: {time.monotonic() - started:.1f} s)", flush=True)
    if args.json:
        write_results(args.json, every, {"bench": "all", "only": names, "quick": args.quick})
    return exit_code(every, quick=bool(args.quick))


if __name__ == "__main__":
    raise SystemExit(main())
