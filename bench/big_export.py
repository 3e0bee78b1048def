"""Benchmark 4, big exports: ``frigade-migrate plan`` on a generated 10-million-row long-format export,
Parquet and CSV, against a floor measured in the same run.

The floor is polars alone doing the least a plan must: scan the export, sort it by user, flow and time,
and write the same rows (to Parquet). Plan and floor each run in their own child process (wall time,
and peak RSS from the child's rusage), alternately, ``--repeat`` times; figures are medians and the
ratios are of medians. One more plan child, not timed, reports the peak memory held by Python objects
(tracemalloc, which slows Python allocations): the export must never be materialised as Python objects.

Targets per format: plan time <= 2x the floor's, plan peak RSS <= 1.5x the floor's.

    python -m bench.big_export [--rows 10000000] [--formats parquet,csv] [--repeat 1]
                               [--data-dir DIR] [--quick]

Generated exports are kept in ``--data-dir`` (named by rows and seed) and reused when present; by
default they go to a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench._common import CATALOG_FILE, ChildRun, Figure, base_parser, median, run_child, run_main
from bench.datagen import write_export
from bench.fewest_requests import catalog

NAME = "big_export"
#: far above what planning without Python rows needs, far below what 10M Python rows would take
PY_HEAP_LIMIT = 256 * 1024 * 1024


def export_path(data_dir: Path, rows: int, seed: int, fmt: str) -> Path:
    return data_dir / f"export-{rows}-s{seed}.{fmt}"


def ensure_export(data_dir: Path, rows: int, seed: int, fmt: str) -> tuple[Path, float]:
    """The export, generated unless already there; returns (path, seconds spent generating)."""
    path = export_path(data_dir, rows, seed, fmt)
    if path.exists():
        return path, 0.0
    started = time.perf_counter()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    write_export(catalog(), tmp, rows, seed)
    tmp.rename(path)
    return path, time.perf_counter() - started


def _requests(output: str) -> int | None:
    m = re.search(r"requests planned\s*│\s*(\d+)", output)
    return int(m.group(1)) if m else None


def _heap(output: str) -> int | None:
    m = re.search(r"python-heap-peak-bytes=(\d+)", output)
    return int(m.group(1)) if m else None


def _check(run: ChildRun, what: str) -> ChildRun:
    if run.code != 0:
        raise RuntimeError(f"{what} exited with {run.code}:\n{run.output[-3000:]}")
    return run


def measure_format(path: Path, fmt: str, repeat: int, workdir: Path) -> list[Figure]:
    floors: list[ChildRun] = []
    plans: list[ChildRun] = []
    for i in range(repeat):
        out = workdir / f"floor-{fmt}-{i}.parquet"
        floors.append(_check(run_child(["bench._child", "floor", str(path), str(out)], workdir), "floor"))
        out.unlink(missing_ok=True)
        plans.append(_check(run_child(["bench._child", "plan", str(path), str(CATALOG_FILE)], workdir), "plan"))
    # tracemalloc slows every Python allocation, so the heap is measured in a run of its own
    heap_run = _check(run_child(["bench._child", "plan-heap", str(path), str(CATALOG_FILE)], workdir), "plan-heap")
    ft, pt = median([r.wall_s for r in floors]), median([r.wall_s for r in plans])
    fm, pm = median([r.max_rss_bytes for r in floors]), median([r.max_rss_bytes for r in plans])
    heap = _heap(heap_run.output) or 0
    requests = _requests(plans[-1].output)
    gib = 1024**3
    b = f"{NAME}[{fmt}]"
    times = ", ".join(f"{r.wall_s:.1f}" for r in plans)
    return [
        Figure(b, f"{fmt}: plan time / floor time", pt / ft, "x", "<= 2", pt / ft <= 2.0),
        Figure(b, f"{fmt}: plan peak RSS / floor peak RSS", pm / fm, "x", "<= 1.5", pm / fm <= 1.5),
        Figure(
            b,
            f"{fmt}: plan, Python-object heap peak",
            heap / 1024**2,
            "MiB",
            f"<= {PY_HEAP_LIMIT // 1024**2} (no rows as Python objects)",
            heap <= PY_HEAP_LIMIT,
        ),
        Figure(b, f"{fmt}: plan wall time (median; {times})", pt, "s"),
        Figure(b, f"{fmt}: floor wall time (median)", ft, "s"),
        Figure(b, f"{fmt}: plan peak RSS (median)", pm / gib, "GiB"),
        Figure(b, f"{fmt}: floor peak RSS (median)", fm / gib, "GiB"),
        Figure(b, f"{fmt}: requests planned", requests if requests is not None else "?", ""),
        Figure(b, f"{fmt}: export size", path.stat().st_size / 1024**2, "MiB"),
    ]


def measure(rows: int, seed: int, formats: Sequence[str], repeat: int, data_dir: Path, workdir: Path) -> list[Figure]:
    figs: list[Figure] = []
    for fmt in formats:
        path, gen_s = ensure_export(data_dir, rows, seed, fmt)
        figs += measure_format(path, fmt, repeat, workdir)
        if gen_s:
            figs.append(Figure(f"{NAME}[{fmt}]", f"{fmt}: generating the export ({rows:,} rows)", gen_s, "s"))
    return figs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the export (default 10000000)")
    p.add_argument("--formats", default="parquet,csv", help="comma-separated: parquet, csv (default both)")
    p.add_argument("--repeat", type=int, default=1, help="plan/floor pairs per format (default 1)")
    p.add_argument("--data-dir", help="keep generated exports here and reuse them (default: a temp folder)")


def run(args: argparse.Namespace) -> list[Figure]:
    rows = 20_000 if args.quick else int(args.rows)
    formats = [f.strip() for f in str(args.formats).split(",") if f.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir and not args.quick else Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        return measure(rows, int(args.seed), formats, max(1, int(args.repeat)), data_dir, Path(tmp))


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 4: big exports", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
