"""Child processes of the export benchmarks, so that each one's wall time and peak RSS are its own.

    python -m bench._child floor EXPORT OUT.parquet     polars alone: scan, sort by user, flow, time, write
    python -m bench._child plan EXPORT CATALOG          ``frigade-migrate plan EXPORT --catalog CATALOG``
    python -m bench._child plan-heap EXPORT CATALOG     the same under tracemalloc (Python-object heap peak)
    python -m bench._child sync-state EXPORT CATALOG DIR   target state and user prints of EXPORT, as remembered
    python -m bench._child sync-plan EXPORT CATALOG DIR OUT.json   full plan vs sync plan of EXPORT

``plan-heap`` runs the real command line under ``tracemalloc`` and prints the peak of memory allocated by
Python objects (``python-heap-peak-bytes=N``): polars' own buffers are not Python objects, so a step that
turned the export into Python rows or dicts would show up there as gigabytes.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

import polars as pl

from lifecycle.exitcodes import ExitCode


def floor(export: str, out: str) -> int:
    lf = pl.scan_parquet(export) if export.endswith(".parquet") else pl.scan_csv(export, infer_schema=False)
    lf.sort("user_id", "flow_slug", "created_at").sink_parquet(out)
    return ExitCode.OK


def plan(export: str, catalog: str) -> int:
    from cli.app import main

    return main(["plan", export, "--catalog", catalog])


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
    print(f"unknown command {cmd!r}", file=sys.stderr)
    return ExitCode.INPUT


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
