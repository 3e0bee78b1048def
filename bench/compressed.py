"""Benchmark 9, compressed exports in bounded memory (issue 22): ``frigade-migrate plan`` on a gzipped
CSV export of about 1 GiB uncompressed, against the same export uncompressed.

A gzip is decompressed in chunks to a local copy, never held in memory (``lifecycle.readers``). Three
children, each with its own peak RSS (from its rusage): reading the .csv.gz alone (decompress, check
every row, estimate the rows: nothing planned), planning the .csv.gz, and planning the plain .csv.
The plans run alternately, ``--repeat`` times; figures are medians.

Targets: reading the .gz peaks below a quarter of the uncompressed size (the decompressed file is
never in memory), and the .gz plan's peak RSS is within 1.1x of the plain file's (decompressing adds
no memory to a plan).

    python -m bench.compressed [--rows 13000000] [--repeat 1] [--data-dir DIR] [--quick]

Generated exports are kept in ``--data-dir`` and reused when present; by default they go to a
temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench._common import CATALOG_FILE, ChildRun, Figure, base_parser, median, run_child, run_main
from bench.big_export import _check, _requests

NAME = "compressed"
MIB = 1024**2


def ensure_exports(data_dir: Path, rows: int, seed: int, workdir: Path) -> tuple[Path, Path, float]:
    """(plain CSV, its gzip, seconds spent generating), generated unless already there."""
    plain = data_dir / f"export-{rows}-s{seed}.csv"
    packed = plain.with_name(plain.name + ".gz")
    started = time.perf_counter()
    if not plain.exists():
        tmp = plain.with_name(plain.stem + ".tmp.csv")
        _check(run_child(["bench._child", "gen-part", str(tmp), str(rows), str(seed), "0"], workdir), "gen-part")
        tmp.rename(plain)
    if not packed.exists():
        tmp = packed.with_name(packed.name + ".tmp")
        with plain.open("rb") as src, gzip.open(tmp, "wb", compresslevel=1) as out:
            shutil.copyfileobj(src, out, MIB)
        tmp.rename(packed)
    return plain, packed, time.perf_counter() - started


def measure(plain: Path, packed: Path, repeat: int, workdir: Path) -> list[Figure]:
    size = plain.stat().st_size
    read = _check(run_child(["bench._child", "read", str(packed)], workdir), "read")
    gz_plans: list[ChildRun] = []
    plain_plans: list[ChildRun] = []
    for _ in range(repeat):
        gz_plans.append(_check(run_child(["bench._child", "plan", str(packed), str(CATALOG_FILE)], workdir), "plan"))
        plain_plans.append(_check(run_child(["bench._child", "plan", str(plain), str(CATALOG_FILE)], workdir), "plan"))
    gz_rss, plain_rss = median([r.max_rss_bytes for r in gz_plans]), median([r.max_rss_bytes for r in plain_plans])
    gz_s, plain_s = median([r.wall_s for r in gz_plans]), median([r.wall_s for r in plain_plans])
    b = NAME
    return [
        Figure(
            b,
            "read the .gz (decompress, check every row): peak RSS / uncompressed size",
            read.max_rss_bytes / size,
            "x",
            "<= 0.25",
            read.max_rss_bytes <= size / 4,
        ),
        Figure(
            b, ".gz plan peak RSS / plain plan peak RSS", gz_rss / plain_rss, "x", "<= 1.1", gz_rss <= 1.1 * plain_rss
        ),
        Figure(b, "uncompressed size", size / MIB, "MiB"),
        Figure(b, "compressed size", packed.stat().st_size / MIB, "MiB"),
        Figure(b, "read the .gz: peak RSS", read.max_rss_bytes / MIB, "MiB"),
        Figure(b, "read the .gz: wall time", read.wall_s, "s"),
        Figure(b, ".gz plan: peak RSS (median)", gz_rss / MIB, "MiB"),
        Figure(b, "plain plan: peak RSS (median)", plain_rss / MIB, "MiB"),
        Figure(b, ".gz plan: wall time (median)", gz_s, "s"),
        Figure(b, "plain plan: wall time (median)", plain_s, "s"),
        Figure(
            b, "requests planned (.gz, plain)", f"{_requests(gz_plans[-1].output)}, {_requests(plain_plans[-1].output)}"
        ),
    ]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=13_000_000, help="rows of the export (default 13000000: ~1.05 GiB)")
    p.add_argument("--repeat", type=int, default=1, help="plan pairs (default 1)")
    p.add_argument("--data-dir", help="keep generated exports here and reuse them (default: a temp folder)")


def run(args: argparse.Namespace) -> list[Figure]:
    rows = 20_000 if args.quick else int(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-gz-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir and not args.quick else Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        plain, packed, gen_s = ensure_exports(data_dir, rows, int(args.seed), Path(tmp))
        figures = measure(plain, packed, max(1, int(args.repeat)), Path(tmp))
        if gen_s:
            figures.append(Figure(NAME, f"generating the exports ({rows:,} rows)", gen_s, "s"))
        return figures


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 9: compressed exports in bounded memory", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
