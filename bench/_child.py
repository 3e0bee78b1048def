"""Child processes of the export benchmarks, so that each one's wall time and peak RSS are its own.

    python -m bench._child floor EXPORT OUT.parquet     polars alone: scan, sort by user, flow, time, write
    python -m bench._child plan EXPORT CATALOG          ``frigade-migrate plan EXPORT --catalog CATALOG``
    python -m bench._child plan-heap EXPORT CATALOG     the same under tracemalloc (Python-object heap peak)
    python -m bench._child sync-state EXPORT CATALOG DIR   target state and user prints of EXPORT, as remembered
    python -m bench._child sync-plan EXPORT CATALOG DIR OUT.json   full plan vs sync plan of EXPORT
    python -m bench._child gen-part OUT.parquet ROWS SEED USER_OFFSET   one part of a generated export
    python -m bench._child shard-floor OUT_DIR SHARDS EXPORT...   polars alone: stream into shards by user, sort each
    python -m bench._child shard-plan CATALOG SHARDS EXPORT...    ``frigade-migrate plan EXPORT... --shards SHARDS``
    python -m bench._child read EXPORT                  open and check every row of EXPORT (a .gz: decompressed)

``shard-floor`` streams every row of the exports into SHARDS Parquet files by a hash of the (stripped)
user id with polars' partitioned sink, which writes ``OUT_DIR/shard=K/00000000.parquet`` (more files
per folder when one grows past its size limit), then reads, sorts by user, flow and time, and writes
each shard as ``OUT_DIR/sorted-K.parquet``; it prints the seconds of each phase (``partition-s=``,
``sort-s=``). ``shard-plan`` with SHARDS ``auto`` passes no ``--shards``: the plan as it is without it.

``plan-heap`` runs the real command line under ``tracemalloc`` and prints the peak of memory allocated by
Python objects (``python-heap-peak-bytes=N``): polars' own buffers are not Python objects, so a step that
turned the export into Python rows or dicts would show up there as gigabytes.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

# first, as in the command itself: a run's allocator settings take effect only before polars loads
import cli  # noqa: F401

# isort: split
import polars as pl

from lifecycle.exitcodes import ExitCode


def floor(export: str, out: str) -> int:
    lf = pl.scan_parquet(export) if export.endswith(".parquet") else pl.scan_csv(export, infer_schema=False)
    lf.sort("user_id", "flow_slug", "created_at").sink_parquet(out)
    return ExitCode.OK


def plan(export: str, catalog: str) -> int:
    from cli.app import main

    return main(["plan", export, "--catalog", catalog])


def read(export: str) -> int:
    """What reading an export costs before any planning: open it (a .gz is decompressed to a local
    copy; the peak RSS by then is printed), check every row (``full``) and estimate its rows."""
    import resource

    from lifecycle.exports import check_exports, estimated_rows
    from lifecycle.readers import open_exports

    open_exports([export])
    print(f"opened-max-rss-bytes={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}", flush=True)
    check_exports([export])
    print(f"estimated-rows={estimated_rows([export])}", flush=True)
    return ExitCode.OK


def gen_part(out: str, rows: str, seed: str, user_offset: str) -> int:
    """One part of a generated export, users numbered from USER_OFFSET, written to OUT (its own process,
    so that generating never inflates the benchmark's own memory)."""
    from bench.datagen import write_export
    from bench.fewest_requests import catalog

    written = write_export(catalog(), Path(out), int(rows), int(seed), user_offset=int(user_offset))
    print(f"rows={written}", flush=True)
    return ExitCode.OK


def _scan(exports: Sequence[str]) -> pl.LazyFrame:
    if all(e.endswith(".parquet") for e in exports):
        return pl.scan_parquet(list(exports))
    return pl.concat([pl.scan_csv(e, infer_schema=False) for e in exports])


def shard_floor(out_dir: str, shards: str, *exports: str) -> int:
    """The least a sharded plan must do: stream every row into SHARDS files by a hash of the user id,
    then sort each shard by user, flow and time and write it."""
    n, out = int(shards), Path(out_dir)
    t0 = time.perf_counter()
    _scan(exports).with_columns(shard=pl.col("user_id").str.strip_chars().hash() % n).sink_parquet(
        pl.PartitionBy(out, key="shard", include_key=False)
    )
    t1 = time.perf_counter()
    rows: list[int] = []
    for k in range(n):
        files = sorted((out / f"shard={k}").glob("*.parquet"))
        if not files:
            continue
        sorted_path = out / f"sorted-{k}.parquet"
        pl.scan_parquet(files).sort("user_id", "flow_slug", "created_at").sink_parquet(sorted_path)
        rows.append(int(pl.scan_parquet(sorted_path).select(pl.len()).collect().item()))
    t2 = time.perf_counter()
    print(
        f"partition-s={t1 - t0:.3f} sort-s={t2 - t1:.3f} rows={sum(rows)} shard-rows-max={max(rows, default=0)}",
        flush=True,
    )
    return ExitCode.OK


def shard_plan(catalog: str, shards: str, *exports: str) -> int:
    from cli.app import main

    flag = [] if shards == "auto" else ["--shards", shards]
    return main(["plan", *exports, "--catalog", catalog, *flag])


def plan_heap(export: str, catalog: str) -> int:
    """``plan`` under tracemalloc, which slows every Python allocation: its own run, never timed."""
    tracemalloc.start()
    code = plan(export, catalog)
    _, peak = tracemalloc.get_traced_memory()
    print(f"python-heap-peak-bytes={peak}", flush=True)
    return code


def _analysis(export: str, catalog: str, *, hash_events: bool = False, known: object = None) -> object:
    from lifecycle.catalogs import load_catalog_file
    from lifecycle.exports import analyze_exports
    from transforms.presets import resolve_mapping

    assert known is None or isinstance(known, pl.DataFrame)
    return analyze_exports(
        [Path(export)], resolve_mapping(None), load_catalog_file(catalog), hash_events=hash_events, known=known
    )


def sync_state(export: str, catalog: str, state_dir: str) -> int:
    """What a finished, clean sync of EXPORT leaves in its state folder: the target state and every
    user's print, remembered."""
    from transforms.analysis import Analysis
    from transforms.sync import remembered

    analysis = _analysis(export, catalog, hash_events=True)
    assert isinstance(analysis, Analysis)
    assert analysis.events_hashes is not None
    flows, steps = remembered(*analysis.targets)
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    flows.write_parquet(Path(state_dir) / "flows.parquet")
    steps.write_parquet(Path(state_dir) / "steps.parquet")
    analysis.events_hashes.write_parquet(Path(state_dir) / "users.parquet")
    return ExitCode.OK


def sync_plan(export: str, catalog: str, state_dir: str, out: str) -> int:
    """Time the full plan of EXPORT (analyze + plan, as a backfill), then the sync plan as
    ``frigade-migrate sync`` makes it (analyze skipping users whose prints are remembered, load the
    remembered state, plan against it)."""
    from lifecycle.statedir import StateDir
    from transforms.analysis import Analysis, plan_requests
    from transforms.sync import remembered

    t0 = time.perf_counter()
    analysis = _analysis(export, catalog)
    assert isinstance(analysis, Analysis)
    t1 = time.perf_counter()
    full = plan_requests(analysis)
    t2 = time.perf_counter()
    full_requests, full_users, rows_in = full.plan.height, full.plan["user_id"].n_unique(), full.counts["rows_in"]
    del analysis, full
    state = StateDir(Path(state_dir))
    t3 = time.perf_counter()
    analysis = _analysis(export, catalog, hash_events=True, known=state.load_events_hashes())
    assert isinstance(analysis, Analysis)
    t4 = time.perf_counter()
    baseline = state.load()
    t5 = time.perf_counter()
    synced = plan_requests(analysis, baseline=baseline)
    t6 = time.perf_counter()
    doc = {
        "analyze_full_s": t1 - t0,
        "plan_full_s": t2 - t1,
        "analyze_sync_s": t4 - t3,
        "load_state_s": t5 - t4,
        "plan_sync_s": t6 - t5,
        "full_requests": full_requests,
        "sync_requests": synced.plan.height,
        "sync_users": synced.plan.get_column("user_id").n_unique(),
        "full_users": full_users,
        "analysed_users": analysis.events_hashes.height if analysis.events_hashes is not None else 0,
        "rows_in": rows_in,
        "sync_accounting": synced.counts,
    }
    base = Path(out).with_suffix("")
    synced.plan.select("user_id", "flow_slug", "seq", "action", "step_id").write_parquet(f"{base}-plan.parquet")
    keys = synced.plan.select("user_id", "flow_slug").unique()
    new_flows, new_steps = remembered(*analysis.targets)
    new_flows.join(keys, on=["user_id", "flow_slug"], how="semi").write_parquet(f"{base}-flows.parquet")
    new_steps.join(keys, on=["user_id", "flow_slug"], how="semi").write_parquet(f"{base}-steps.parquet")
    Path(out).write_text(json.dumps(doc), encoding="utf-8")
    return ExitCode.OK


def main(argv: list[str]) -> int:
    cmd, *rest = argv
    if cmd == "floor":
        return floor(*rest)
    if cmd == "plan":
        return plan(*rest)
    if cmd == "plan-heap":
        return plan_heap(*rest)
    if cmd == "sync-state":
        return sync_state(*rest)
    if cmd == "sync-plan":
        return sync_plan(*rest)
    if cmd == "read":
        return read(*rest)
    if cmd == "gen-part":
        return gen_part(*rest)
    if cmd == "shard-floor":
        return shard_floor(*rest)
    if cmd == "shard-plan":
        return shard_plan(*rest)
    print(f"unknown command {cmd!r}", file=sys.stderr)
    return ExitCode.INPUT


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
