"""Every benchmark's code runs end to end at tiny sizes (``--quick``), so the benchmarks cannot rot.

The figures of a quick run are not meaningful and their targets are not checked here: targets are
checked by the benchmarks' own output on full-size runs (bench/RESULTS.md), never by timed tests."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

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
from bench.__main__ import BENCHES, _namespace
from bench._common import Figure, base_parser, print_table, run_main

pytestmark = pytest.mark.slow


def _run(name: str, run: Callable[[argparse.Namespace], list[Figure]], httpcore: bool = False) -> list[Figure]:
    args = base_parser("bench", "").parse_args(["--quick"])
    args.data_dir = None
    ns = _namespace(name, args)
    if httpcore:
        ns.httpcore = True
    figures = run(ns)
    lines: list[str] = []
    print_table(figures, name, out=lines.append)
    assert figures
    assert all(f.bench.startswith(name) for f in figures)
    assert any(f.passed is not None for f in figures), "every benchmark checks at least one target"
    assert any(line.startswith("| figure") for line in lines)
    return figures


def test_push_limit_quick() -> None:
    figures = _run("push_limit", push_limit.run)
    assert any("achieved rate" in f.name for f in figures)


def test_push_ceiling_quick_with_httpcore() -> None:
    figures = _run("push_ceiling", push_ceiling.run, httpcore=True)
    assert any(f.name.startswith("aiohttp:") for f in figures)
    assert any(f.name.startswith(push_ceiling.HTTPCORE) for f in figures)


def test_fewest_requests_quick() -> None:
    figures = _run("fewest_requests", fewest_requests.run)
    # exact at any size: the planner is minimal and its plan replays to the target
    assert all(f.passed for f in figures if f.passed is not None)


def test_big_export_quick() -> None:
    figures = _run("big_export", big_export.run)
    assert any("Python-object heap" in f.name for f in figures)


def test_sync_cost_quick() -> None:
    figures = _run("sync_cost", sync_cost.run)
    # which users a sync plans and how many requests is exact at any size
    assert all(f.passed for f in figures if f.passed is not None)


def test_compressed_quick() -> None:
    figures = _run("compressed", compressed.run)
    assert any(f.name == ".gz plan peak RSS / plain plan peak RSS" for f in figures)
    # the same requests planned from the gzip as from the plain file
    planned = next(f.value for f in figures if f.name.startswith("requests planned"))
    first, second = str(planned).split(", ")
    assert first == second != "None"


def test_shards_quick() -> None:
    # plans with --shards 2 over an export written in 2 parts
    figures = _run("shards", shards.run)
    assert any(f.name == "plan peak RSS (median)" for f in figures)
    assert any(f.name == "shards (plan / floor)" and f.value == "2 / 2" for f in figures)


def test_export_parts_have_distinct_users(tmp_path: Path) -> None:
    import polars as pl

    paths, _ = shards.ensure_parts(tmp_path, 30_000, 3, 7, tmp_path)
    assert [int(pl.scan_parquet(p).select(pl.len()).collect().item()) for p in paths] == [10_000, 10_000, 10_000]
    users = [set(pl.read_parquet(p, columns=["user_id"])["user_id"]) for p in paths]
    assert all(users)
    assert sum(len(u) for u in users) == len(set().union(*users)), "no user in two parts"
    # part 0 is the export existing callers get (offset 0)
    assert pl.read_parquet(paths[0]).equals(pl.read_parquet(_plain(tmp_path / "plain.parquet", 10_000, 7)))
    # present parts are reused
    assert shards.ensure_parts(tmp_path, 30_000, 3, 7, tmp_path) == (paths, 0.0)


def _plain(path: Path, rows: int, seed: int) -> Path:
    from bench.datagen import write_export
    from bench.fewest_requests import catalog

    write_export(catalog(), path, rows, seed)
    return path


def test_every_benchmark_is_wired_into_the_runner() -> None:
    assert set(BENCHES) == {
        "push_limit",
        "push_ceiling",
        "fewest_requests",
        "big_export",
        "sync_cost",
        "whole_job",
        "shards",
        "workers",
        "compressed",
        "real_account",
        "push_memory",
    }


def test_push_memory_quick() -> None:
    figures = _run("push_memory", push_memory.run)
    assert [f.value for f in figures if "exit code" in f.name] == [0, 0]
    assert any(f.name.endswith("peak RSS during the push") for f in figures)


def test_real_account_quick() -> None:
    figures = _run("real_account", real_account.run)
    # exact at any size: every planned request sent, at R and against the throttling server
    exact = [f for f in figures if "exit code" in f.name or "requests sent" in f.name]
    assert len(exact) == 4
    assert all(f.passed for f in exact)
    assert any(f.name.startswith("job / aiohttp CPU per request, all in") for f in figures)
    assert any(f.name.startswith("job / aiohttp CPU per request beyond the fixed start") for f in figures)


def test_whole_job_quick() -> None:
    figures = _run("whole_job", whole_job.run)
    # exact at any size: the backfill sends every planned request, none of them redundant
    exact = [f for f in figures if "exit code" in f.name or "requests sent" in f.name or "changed nothing" in f.name]
    assert len(exact) == 3
    assert all(f.passed for f in exact)


def test_workers_quick() -> None:
    figures = _run("workers", workers.run)
    # exact and within the budget on one worker and on two: every planned request sent once, no 429
    exact = [f for f in figures if f.passed is not None]
    assert len(exact) == 10
    assert all(f.passed for f in exact), [f for f in exact if not f.passed]


@pytest.mark.parametrize(("quick", "code"), [(False, 1), (True, 0)])
def test_a_failed_target_fails_a_full_run_but_not_a_smoke_run(quick: bool, code: int) -> None:
    failed = [Figure("b", "ratio", 3.0, "x", "<= 2", False), Figure("b", "context", 1)]
    argv = ["--quick"] if quick else []
    assert run_main("b", lambda args: failed, base_parser("bench", ""), argv) == code
