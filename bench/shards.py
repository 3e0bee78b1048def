"""Benchmark 7, exports of any size in bounded memory: ``frigade-migrate plan --shards N`` on a generated
100-million-row Parquet export, against a floor measured in the same run.

The export is written in ``--parts`` Parquet files (ten of 10M rows by default: one generator run cannot
hold 100M rows), each with users of its own (numbered from an offset per part), each part generated in
a child process of its own. The plan splits the users into N shards by a hash of the normalised user id
and analyses and plans each on its own. The floor is polars alone doing the least such a plan must:
stream every row of the export into N Parquet files by a hash of the (stripped) user id (polars'
partitioned sink), then read each shard, sort it by user, flow and time, and write it. Plan and floor
each run in their own child process (wall time, and peak RSS from the child's rusage), alternately,
``--repeat`` times; figures are medians and the ratio is of medians. ``--baseline`` adds a plan
with ``--shards 1`` (the whole export at once, as every plan was before shards) to compare memory with.

Targets: plan time <= 2x the floor's, plan peak RSS <= 6 GiB (this machine has 23 GiB); with
``--baseline``, the sharded plan's peak RSS no worse than today's (<= 1.05x: the same plan's peak RSS
varies by a few percent between runs), the target at 10M rows (``--rows 10000000 --parts 1``).

    python -m bench.shards [--rows 100000000] [--parts 10] [--shards N|auto] [--repeat 1]
                           [--baseline] [--data-dir DIR] [--quick]

``--shards`` defaults to the product's choice, one shard per 5M rows (20 for 100M); ``auto`` passes no ``--shards``.
Generated parts are kept in ``--data-dir`` (a folder named by rows, parts and seed) and reused when
present; by default they go to a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench._common import CATALOG_FILE, ChildRun, Figure, base_parser, median, run_child, run_main
from bench.big_export import _requests
from bench.datagen import users_for_rows
from lifecycle.shards import SHARD_ROWS

NAME = "shards"
RSS_LIMIT = 6 * 1024**3
TIME_RATIO = 2.0
#: "not worse than today": the same plan's peak RSS varies by a few percent from run to run
TODAY_RATIO = 1.05
#: rows per shard the default --shards aims at: the product's own choice
ROWS_PER_SHARD = SHARD_ROWS
#: generating one 10M-row part takes 15-40 s; a 100M-row plan about 3 min
TIMEOUT_S = 3600.0


def parts_dir(data_dir: Path, rows: int, parts: int, seed: int) -> Path:
    return data_dir / f"export-{rows}-p{parts}-s{seed}"


def part_rows(rows: int, parts: int) -> list[int]:
    """Rows of each part: equal, the last one taking the remainder."""
    each = rows // parts
    return [each] * (parts - 1) + [rows - each * (parts - 1)]


def ensure_parts(data_dir: Path, rows: int, parts: int, seed: int, workdir: Path) -> tuple[list[Path], float]:
    """The export's parts, each generated unless already there (users of part k numbered from k times
    the users of the largest part, so no user is in two parts); returns (paths, seconds generating)."""
    folder = parts_dir(data_dir, rows, parts, seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = part_rows(rows, parts)
    stride = users_for_rows(max(sizes))
    paths: list[Path] = []
    spent = 0.0
    for k, n in enumerate(sizes):
        path = folder / f"part-{k:02d}.parquet"
        paths.append(path)
        if path.exists():
            continue
        tmp = path.with_name(path.stem + ".tmp.parquet")
        run = _check(
            run_child(["bench._child", "gen-part", str(tmp), str(n), str(seed), str(k * stride)], workdir, TIMEOUT_S),
            f"generating part {k}",
        )
        tmp.rename(path)
        spent += run.wall_s
    return paths, spent


def _check(run: ChildRun, what: str) -> ChildRun:
    if run.code != 0:
        raise RuntimeError(f"{what} exited with {run.code}:\n{run.output[-3000:]}")
    return run


def _phase(output: str, key: str) -> float | None:
    for word in output.split():
        if word.startswith(f"{key}="):
            return float(word.split("=", 1)[1])
    return None


def measure(
    paths: Sequence[Path], rows: int, shards: str, floor_shards: int, repeat: int, baseline: bool, workdir: Path
) -> list[Figure]:
    exports = [str(p) for p in paths]
    floors: list[ChildRun] = []
    plans: list[ChildRun] = []
    for i in range(repeat):
        out = workdir / f"floor-{i}"
        floors.append(
            _check(
                run_child(["bench._child", "shard-floor", str(out), str(floor_shards), *exports], workdir, TIMEOUT_S),
                "shard floor",
            )
        )
        shutil.rmtree(out, ignore_errors=True)
        plans.append(
            _check(
                run_child(["bench._child", "shard-plan", str(CATALOG_FILE), shards, *exports], workdir, TIMEOUT_S),
                "plan",
            )
        )
        shutil.rmtree(workdir / "runs", ignore_errors=True)
    ft, pt = median([r.wall_s for r in floors]), median([r.wall_s for r in plans])
    fm, pm = median([r.max_rss_bytes for r in floors]), median([r.max_rss_bytes for r in plans])
    gib = 1024**3
    b = NAME
    times = ", ".join(f"{r.wall_s:.1f}" for r in plans)
    partition = median([_phase(r.output, "partition-s") or float("nan") for r in floors])
    sort = median([_phase(r.output, "sort-s") or float("nan") for r in floors])
    figs = [
        Figure(b, "plan time / floor time", pt / ft, "x", f"<= {TIME_RATIO:g}", pt / ft <= TIME_RATIO),
        Figure(b, "plan peak RSS (median)", pm / gib, "GiB", f"<= {RSS_LIMIT // gib}", pm <= RSS_LIMIT),
    ]
    if baseline:
        today = _check(
            # one shard: the whole export analysed and planned at once, as every plan was before shards
            run_child(["bench._child", "shard-plan", str(CATALOG_FILE), "1", *exports], workdir, TIMEOUT_S),
            "plan with --shards 1",
        )
        shutil.rmtree(workdir / "runs", ignore_errors=True)
        figs += [
            Figure(
                b,
                "plan peak RSS / one shard (--shards 1)",
                pm / today.max_rss_bytes,
                "x",
                f"<= {TODAY_RATIO:g} (not worse than today, within noise)",
                pm / today.max_rss_bytes <= TODAY_RATIO,
            ),
            Figure(b, "plan with --shards 1: wall time", today.wall_s, "s"),
            Figure(b, "plan with --shards 1: peak RSS", today.max_rss_bytes / gib, "GiB"),
            Figure(b, "plan with --shards 1: requests planned", _shown(_requests(today.output)), ""),
        ]
    figs += [
        Figure(b, f"plan wall time (median; {times})", pt, "s"),
        Figure(b, "plan: requests planned", _shown(_requests(plans[-1].output)), ""),
        Figure(b, "floor wall time (median)", ft, "s"),
        Figure(b, "floor: partitioning / sorting the shards (median)", f"{partition:.1f} / {sort:.1f}", "s"),
        Figure(b, "floor peak RSS (median)", fm / gib, "GiB"),
        Figure(b, "floor: rows in the largest shard", int(_phase(floors[-1].output, "shard-rows-max") or 0), ""),
        Figure(b, "export size", sum(p.stat().st_size for p in paths) / 1024**2, "MiB"),
        Figure(b, "rows", rows, ""),
        Figure(b, "parts", len(paths), ""),
        Figure(b, "shards (plan / floor)", f"{shards} / {floor_shards}", ""),
    ]
    return figs


def _shown(n: int | None) -> int | str:
    return n if n is not None else "?"


def default_shards(rows: int) -> int:
    return max(1, round(rows / ROWS_PER_SHARD))


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=100_000_000, help="rows of the export (default 100000000)")
    p.add_argument("--parts", type=int, default=10, help="Parquet files the export is written in (default 10)")
    p.add_argument(
        "--shards",
        default=None,
        help="the plan's --shards: N, or auto to pass none (default: one per 5M rows, 20 for 100M)",
    )
    p.add_argument("--repeat", type=int, default=1, help="plan/floor pairs (default 1)")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also plan with --shards 1 (the whole export at once), for its peak RSS (for 10M rows: at 2.7 GiB "
        "per 10M rows, 100M would not fit)",
    )
    p.add_argument("--data-dir", help="keep generated exports here and reuse them (default: a temp folder)")


def run(args: argparse.Namespace) -> list[Figure]:
    rows, parts = (200_000, 2) if args.quick else (int(args.rows), max(1, int(args.parts)))
    shards = str(args.shards) if args.shards else str(2 if args.quick else default_shards(rows))
    # the floor needs a number of shards; with the plan's own choice (auto) it takes the default
    floor_shards = int(shards) if shards != "auto" else (2 if args.quick else default_shards(rows))
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir and not args.quick else Path(tmp)
        paths, gen_s = ensure_parts(data_dir, rows, parts, int(args.seed), Path(tmp))
        figs = measure(paths, rows, shards, floor_shards, max(1, int(args.repeat)), bool(args.baseline), Path(tmp))
        if gen_s:
            figs.append(Figure(NAME, f"generating the export ({rows:,} rows, {parts} parts)", gen_s, "s"))
        return figs


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 7: exports of any size in bounded memory", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
