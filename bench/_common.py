"""What every benchmark shares: the figure table, medians, command-line basics and the result file.

A benchmark returns a list of ``Figure``; each says its value, its target and whether the target holds.
Figures without a target are context (baselines, raw counts) and print ``-`` as their verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "ChildRun",
    "Figure",
    "base_parser",
    "machine",
    "median",
    "print_table",
    "run_child",
    "run_main",
    "write_results",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the sample catalog every benchmark plans and pushes against (the emulator serves the same one)
CATALOG_FILE = REPO_ROOT / "data" / "catalog.yaml"


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure. ``passed`` is None for context figures that have no target."""

    bench: str
    name: str
    value: float | int | str
    unit: str = ""
    target: str = ""
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def shown(self) -> str:
        v = self.value
        if isinstance(v, float):
            text = f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        elif isinstance(v, int):
            text = f"{v:,}"
        else:
            text = v
        return f"{text} {self.unit}".strip()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def print_table(figures: Sequence[Figure], title: str, out: Callable[[str], None] | None = None) -> None:
    """A plain-text (and Markdown-compatible) table: figure | value | target | verdict."""
    emit = out or (lambda s: print(s, flush=True))
    rows = [("figure", "value", "target", "result")] + [
        (f.name, f.shown(), f.target or "-", f.verdict) for f in figures
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    emit(f"\n### {title}\n")
    for i, r in enumerate(rows):
        emit("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            emit("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    failed = [f for f in figures if f.passed is False]
    checked = [f for f in figures if f.passed is not None]
    emit(
        f"\n{len(checked) - len(failed)}/{len(checked)} targets PASS"
        + (" (FAIL: " + ", ".join(f.name for f in failed) + ")" if failed else "")
    )


def machine() -> dict[str, str | int | None]:
    mem = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            mem = int(fh.readline().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": mem,
    }


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and short runs (smoke test); targets are still printed but are not meaningful at these sizes",
    )
    p.add_argument("--seed", type=int, default=20240601, help="seed of the generated data (default fixed)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    return p


def write_results(path: str | os.PathLike[str], figures: Sequence[Figure], extra: dict[str, object]) -> None:
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **extra,
        "figures": [asdict(f) | {"verdict": f.verdict} for f in figures],
    }
    Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")


def run_main(
    title: str,
    run: Callable[[argparse.Namespace], list[Figure]],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse, run, print the table, write JSON when asked. Exit 0 when every target passes, else 1;
    a ``--quick`` run exits 0 once it has run, since its sizes are too small for its targets to mean anything."""
    args = parser.parse_args(None if argv is None else list(argv))
    started = time.monotonic()
    figures = run(args)
    print_table(figures, title)
    print(f"({time.monotonic() - started:.1f} s)", flush=True)
    if args.json:
        write_results(args.json, figures, {"bench": title, "argv": list(sys.argv[1:] if argv is None else argv)})
    return exit_code(figures, quick=bool(args.quick))


def exit_code(figures: Sequence[Figure], *, quick: bool) -> int:
    """0 when every target passes, else 1; a ``--quick`` run, too small for its targets, 0 once it ran."""
    if quick:
        print("(--quick: a smoke run at tiny sizes; its targets are printed, not judged)", flush=True)
        return 0
    return 0 if all(f.passed is not False for f in figures) else 1


@dataclass(frozen=True, slots=True)
class ChildRun:
    """A child process's exit code, wall time, peak RSS and output."""

    code: int
    wall_s: float
    max_rss_bytes: int
    output: str
    #: user + system CPU of the child and the children it waited for
    cpu_s: float = 0.0


def run_child(
    args: Sequence[str], cwd: Path, timeout_s: float = 1800.0, env: Mapping[str, str] | None = None
) -> ChildRun:
    """Run ``python -m <args>`` in ``cwd`` with this checkout importable (``env`` over this process's
    environment); peak RSS and CPU from wait4's rusage (the child's own, exact, no polling). Killed (by
    its pid) past ``timeout_s``."""
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    log = cwd / f"child-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = started + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(encoding="utf-8", errors="replace")
    log.unlink()
    return ChildRun(proc.returncode, wall, usage.ru_maxrss * 1024, text, usage.ru_utime + usage.ru_stime)
