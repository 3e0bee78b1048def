"""Benchmark 5, incremental sync cost: planning a sync of a 10-million-row export in which 1 % of the
users changed, against planning it in full.

Data: the generated export of benchmark 4 (same rows and seed: reused from ``--data-dir``), and a new
export = the same rows plus, for 1 % of its users (chosen by a hash of the id and the seed), a later
reset of the onboarding checklist and a start of its second step, so their target state surely changed.
The previous sync's state folder holds the old export's target state and every user's print exactly as
``lifecycle.statedir.StateDir`` remembers them after a clean sync. Then, in one child process: the full plan
of the new export (``analyze`` + ``plan(analysis)``, as a backfill), and the sync plan as
``frigade-migrate sync`` makes it (``analyze`` skipping the users whose prints are remembered, then
``plan(analysis, baseline=<remembered state>)``).

Figures: planning times (sync vs full, and the plan stage alone), requests of each, and whether the
sync plans only the changed users' requests: no user outside the changed set, every changed user, and
exactly the fewest writes from each changed user-flow's remembered state to its new target (a
breadth-first search over the shared rules, independent of the planner).

    python -m bench.sync_cost [--rows 10000000] [--changed-per-mille 10] [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from bench._common import CATALOG_FILE, Figure, base_parser, run_child, run_main
from bench.big_export import ensure_export
from bench.fewest_requests import Logical, catalog, min_requests
from frigade.rules import FlowState, StepState

NAME = "sync_cost"
FLOW = "flow_onboarding"


def write_new_export(old: Path, new: Path, seed: int, per_mille: int) -> pl.DataFrame:
    """``old`` plus a reset and a step start for the chosen users; returns the chosen user ids."""
    lf = pl.scan_parquet(old)
    users = (
        lf.select("user_id")
        .unique()
        .filter((pl.col("user_id").hash(seed) % 1000) < per_mille)
        .sort("user_id")
        .collect()
    )
    # after every generated event (2023), and not in the future: validation quarantines future times
    at = datetime(2025, 1, 1, tzinfo=UTC)
    schema = lf.collect_schema()

    def rows(action: str, step: str | None, minute: int) -> pl.LazyFrame:
        return users.lazy().select(
            "user_id",
            pl.lit(None, pl.String).alias("group_id"),
            pl.lit(FLOW).alias("flow_slug"),
            pl.lit(step, pl.String).alias("step_id"),
            pl.lit(action).alias("action"),
            pl.lit(at.replace(minute=minute)).cast(schema["created_at"]).alias("created_at"),
            pl.lit(None, pl.String).alias("data"),
        )

    added = pl.concat([rows("NOT_STARTED_FLOW", None, 0), rows("STARTED_STEP", "invite-team", 1)])
    pl.concat([lf, added.select(schema.names())]).sink_parquet(new)
    return users


def _state(
    row: dict[str, object] | None, steps: dict[str, tuple[bool, bool, bool]], step_ids: tuple[str, ...]
) -> FlowState:
    if row is None:
        return FlowState(step_ids=step_ids)
    idx = row["current_step_index"]
    return FlowState(
        step_ids=step_ids,
        started=bool(row["started"]),
        completed=bool(row["completed"]),
        skipped=bool(row["skipped"]),
        current_step_index=int(idx) if isinstance(idx, int) else -1,
        steps=tuple(StepState(*steps.get(s, (False, False, False))) for s in step_ids),
    )


def _states(flows: pl.DataFrame, steps: pl.DataFrame, step_ids: tuple[str, ...]) -> dict[tuple[str, str], FlowState]:
    by_key: dict[tuple[str, str], dict[str, tuple[bool, bool, bool]]] = {}
    for r in steps.iter_rows(named=True):
        by_key.setdefault((r["user_id"], r["flow_slug"]), {})[r["step_id"]] = (
            bool(r["step_started"]),
            bool(r["step_completed"]),
            bool(r["step_skipped"]),
        )
    return {
        (r["user_id"], r["flow_slug"]): _state(r, by_key.get((r["user_id"], r["flow_slug"]), {}), step_ids)
        for r in flows.iter_rows(named=True)
    }


def minimum_from_state(state_dir: Path, base: Path, changed_users: pl.DataFrame) -> int:
    """Fewest writes from each planned user-flow's remembered state to its new target (changed users
    only: a few thousand rows, so plain Python over the shared rules)."""
    flow = catalog().get(FLOW)
    assert flow is not None
    new_flows = pl.read_parquet(f"{base}-flows.parquet")
    keys = new_flows.select("user_id", "flow_slug")
    old_flows = pl.read_parquet(state_dir / "flows.parquet").join(keys, on=["user_id", "flow_slug"], how="semi")
    old_steps = pl.read_parquet(state_dir / "steps.parquet").join(keys, on=["user_id", "flow_slug"], how="semi")
    new = _states(
        new_flows.filter(pl.col("flow_slug") == FLOW),
        pl.read_parquet(f"{base}-steps.parquet").filter(pl.col("flow_slug") == FLOW),
        flow.step_ids,
    )
    old = _states(old_flows, old_steps, flow.step_ids)
    pairs: dict[tuple[Logical, Logical], int] = {}
    starts: dict[Logical, FlowState] = {}
    for key, target in new.items():
        start = old.get(key, FlowState(step_ids=flow.step_ids))
        starts[start.logical()] = start
        pair = (start.logical(), target.logical())
        pairs[pair] = pairs.get(pair, 0) + 1
    total = 0
    for s_logical, start in starts.items():
        targets = {t for (s, t) in pairs if s == s_logical}
        best = min_requests(flow.step_ids, targets, start=start)
        total += sum(best[t] * n for (s, t), n in pairs.items() if s == s_logical)
    return total


def measure(rows: int, seed: int, per_mille: int, data_dir: Path, workdir: Path) -> list[Figure]:
    old, _ = ensure_export(data_dir, rows, seed, "parquet")
    new = workdir / "export-new.parquet"
    changed = write_new_export(old, new, seed, per_mille)
    state_dir = workdir / "state"
    for what, args in (
        ("sync-state", ["bench._child", "sync-state", str(old), str(CATALOG_FILE), str(state_dir)]),
        (
            "sync-plan",
            ["bench._child", "sync-plan", str(new), str(CATALOG_FILE), str(state_dir), str(workdir / "sync.json")],
        ),
    ):
        run = run_child(args, workdir)
        if run.code != 0:
            raise RuntimeError(f"{what} exited with {run.code}:\n{run.output[-3000:]}")
    doc = json.loads((workdir / "sync.json").read_text(encoding="utf-8"))
    base = workdir / "sync"
    planned = pl.read_parquet(f"{base}-plan.parquet")
    planned_users = planned.select("user_id").unique()
    outside = planned_users.join(changed, on="user_id", how="anti").height
    missing = changed.join(planned_users, on="user_id", how="anti").height
    minimum = minimum_from_state(state_dir, base, changed)
    full_s = doc["analyze_full_s"] + doc["plan_full_s"]
    sync_s = doc["analyze_sync_s"] + doc["load_state_s"] + doc["plan_sync_s"]
    acc = doc["sync_accounting"]
    closes = acc["rows_in"] == acc["rows_sent"] + acc["rows_redundant"] + acc["rows_dropped"] + acc["rows_quarantined"]
    b = NAME
    n_changed = changed.height
    return [
        Figure(b, "sync: users with requests outside the changed users", outside, "", "0", outside == 0),
        Figure(b, "sync: changed users without requests", missing, "", "0", missing == 0),
        Figure(
            b,
            "sync: requests planned",
            doc["sync_requests"],
            "",
            f"= fewest for the changed users ({minimum:,})",
            doc["sync_requests"] == minimum,
        ),
        Figure(b, "full plan: requests", doc["full_requests"], ""),
        Figure(b, "sync requests / full requests", doc["sync_requests"] / max(1, doc["full_requests"]), "x"),
        Figure(b, f"changed users ({per_mille / 10:g} % of {doc['full_users']:,})", n_changed, ""),
        Figure(b, "sync: row accounting closes", "yes" if closes else "no", "", "yes", closes),
        Figure(b, "sync planning time (analyze + state + plan)", sync_s, "s"),
        Figure(b, "full planning time (analyze + plan)", full_s, "s"),
        Figure(b, "sync time / full time", sync_s / full_s, "x"),
        Figure(b, "analyze: sync / full", f"{doc['analyze_sync_s']:.2f} s / {doc['analyze_full_s']:.2f} s"),
        Figure(b, "plan stage: sync / full", f"{doc['plan_sync_s']:.2f} s / {doc['plan_full_s']:.2f} s"),
        Figure(b, "users analysed by the sync (prints differ from the remembered)", doc["analysed_users"], ""),
        Figure(b, "rows in (new export)", doc["rows_in"], ""),
    ]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the old export (default 10000000)")
    p.add_argument("--changed-per-mille", type=int, default=10, help="changed users, per mille (default 10)")
    p.add_argument("--data-dir", help="where benchmark 4 keeps its exports (reused when present)")


def run(args: argparse.Namespace) -> list[Figure]:
    rows = 20_000 if args.quick else int(args.rows)
    per_mille = 50 if args.quick else int(args.changed_per_mille)
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir and not args.quick else Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        return measure(rows, int(args.seed), per_mille, data_dir, Path(tmp))


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 5: incremental sync cost", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
