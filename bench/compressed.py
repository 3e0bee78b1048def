"""Benchmark 9, compressed exports in bounded memory (issue 22): ``frigade-migrate plan`` on a gzipped
CSV export of about 1 GiB uncompressed, against the same export uncompressed.

A gzip is decompressed in chunks to a local copy, never held in memory (``lifecycle.readers``). Each
step runs in a child process with its own peak RSS (from its rusage): reading the .csv.gz (decompress,
then check every row and estimate the rows: nothing planned; the peak RSS once decompressed is
printed by the child) and reading the plain .csv the same way, then planning the .csv.gz and the plain
.csv, alternately, ``--repeat`` times; figures are medians. Polars memory-maps the file it reads, so
the pages of it that a check or a plan touches count in its RSS, for the plain file as for the copy.

Targets: decompressing peaks below a quarter of the uncompressed size (the decompressed file is never
in memory), and reading or planning the .gz peaks within 1.1x of the plain file (decompressing adds no
memory to either).

    python -m bench.compressed [--rows 13000000] [--repeat 1] [--data-dir DIR] [--quick]

Generated exports are kept in ``--data-dir`` and reused when present; by default they go to a
temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import gzip
import re
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
    started, generated = time.perf_counter(), False
    if not plain.exists():
        generated = True
        tmp = plain.with_name(plain.stem + ".tmp.csv")
        _check(run_child(["bench._child", "gen-part", str(tmp), str(rows), str(seed), "0"], workdir), "gen-part")
        tmp.rename(plain)
    if not packed.exists():
        generated = True
        tmp = packed.with_name(packed.name + ".tmp")
        with plain.open("rb") as src, gzip.open(tmp, "wb", compresslevel=1) as out:
            shutil.copyfileobj(src, out, MIB)
        tmp.rename(packed)
    return plain, packed, time.perf_counter() - started if generated else 0.0


def measure(plain: Path, packed: Path, repeat: int, workdir: Path) -> list[Figure]:
    size = plain.stat().st_size
    read = _check(run_child(["bench._child", "read", str(packed)], workdir), "read")
    read_plain = _check(run_child(["bench._child", "read", str(plain)], workdir), "read")
    m = re.search(r"opened-max-rss-bytes=(\d+)", read.output)
    opened = int(m.group(1)) if m else read.max_rss_bytes
    gz_plans: list[ChildRun] = []
    plain_plans: list[ChildRun] = []
    for _ in range(repeat):
        gz_plans.append(_check(run_child(["bench._child", "plan", str(packed), str(CATALOG_FILE)], workdir), "plan"))
        plain_plans.append(_check(run_child(["bench._child", "plan", str(plain), str(CATALOG_FILE)], workdir), "plan"))
    gz_rss, plain_rss = median([r.max_rss_bytes for r in gz_plans]), median([r.max_rss_bytes for r in plain_plans])
    gz_s, plain_s = median([r.wall_s for r in gz_plans]), median([r.wall_s for r in plain_plans])
    b, target = NAME, "<= 0.25"
    return [
        Figure(b, "decompress the .gz: peak RSS / uncompressed size", opened / size, "x", target, 4 * opened <= size),
        Figure(
            b,
            "read the .gz / read the plain file (check every row): peak RSS",
            read.max_rss_bytes / read_plain.max_rss_bytes,
            "x",
            "<= 1.1",
            read.max_rss_bytes <= 1.1 * read_plain.max_rss_bytes,
        ),
        Figure(
            b, ".gz plan peak RSS / plain plan peak RSS", gz_rss / plain_rss, "x", "<= 1.1", gz_rss <= 1.1 * plain_rss
        ),
        Figure(b, "uncompressed size", size / MIB, "MiB"),
        Figure(b, "compressed size", packed.stat().st_size / MIB, "MiB"),
        Figure(b, "decompress the .gz: peak RSS", opened / MIB, "MiB"),
        Figure(b, "read the .gz: peak RSS", read.max_rss_bytes / MIB, "MiB"),
        Figure(b, "read the plain file: peak RSS", read_plain.max_rss_bytes / MIB, "MiB"),
        Figure(b, "read the .gz: wall time", read.wall_s, "s"),
        Figure(b, "read the plain file: wall time", read_plain.wall_s, "s"),
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
