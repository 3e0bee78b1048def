"""Benchmark 3, fewest requests: what state mode plans, against one request per source row and against
the true minimum.

A generated export (realistic histories: starts, views, repeats, completions, skips, resets, plus
duplicate and late rows) goes through the job's planning (``lifecycle.exports.plan_exports``, as
``frigade-migrate plan`` runs it) in state mode and in history mode. The minimum is computed
independently of the planner: for every distinct target state of a flow, a breadth-first search over
the shared rules (``frigade.rules.apply``) from the initial state gives the fewest writes that reach it
exactly; the minimum is the sum over all user-flows. The plan is also replayed through the rules (once
per distinct request sequence) to prove it reaches every user-flow's target.

Target: requests planned in state mode == the minimum.

    python -m bench.fewest_requests [--rows 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from bench._common import CATALOG_FILE, Figure, base_parser, run_main
from bench.datagen import write_export
from frigade.catalog import Catalog, parse_catalog
from frigade.rules import Action, FlowState, apply, initial_state
from lifecycle.exports import plan_exports
from transforms.analysis import Prepared
from transforms.presets import resolve_mapping

NAME = "fewest_requests"
Logical = tuple[object, ...]


def catalog() -> Catalog:
    return parse_catalog(CATALOG_FILE.read_text(encoding="utf-8"), str(CATALOG_FILE))


def _moves(step_ids: Sequence[str]) -> list[tuple[Action, str | None]]:
    return [(a, s) for a in Action for s in (step_ids if a.is_step else [None])]


def min_requests(
    step_ids: Sequence[str], targets: set[Logical], max_depth: int = 24, start: FlowState | None = None
) -> dict[Logical, int]:
    """Fewest writes from ``start`` (default: the initial state) to each target (logical state), by
    breadth-first search over the shared rules."""
    start = start if start is not None else initial_state(step_ids)
    moves = _moves(step_ids)
    dist: dict[Logical, int] = {start.logical(): 0}
    found = {t: 0 for t in targets if t == start.logical()}
    queue: deque[tuple[FlowState, int]] = deque([(start, 0)])
    while queue and len(found) < len(targets):
        state, d = queue.popleft()
        if d >= max_depth:
            break
        for action, step in moves:
            nxt = apply(state, action, step)
            key = nxt.logical()
            if key in dist:
                continue
            dist[key] = d + 1
            if key in targets:
                found[key] = d + 1
            queue.append((nxt, d + 1))
    missing = targets - set(found)
    if missing:
        raise RuntimeError(f"{len(missing)} target states not reachable within {max_depth} writes")
    return found


def target_table(p: Prepared) -> pl.DataFrame:
    """One row per user-flow: its target as text key parts (flow fields, ordered step triples)."""
    steps = (
        p.expected_steps.sort("user_id", "flow_slug", "step_index")
        .group_by("user_id", "flow_slug", maintain_order=True)
        .agg(pl.concat_list("step_started", "step_completed", "step_skipped").alias("triples"))
    )
    return p.expected_flows.select(
        "user_id", "flow_slug", "started", "completed", "skipped", "current_step_index"
    ).join(steps, on=["user_id", "flow_slug"], how="left")


def _logical(row: dict[str, object], n_steps: int) -> Logical:
    triples = row["triples"] if row["triples"] is not None else [[False] * 3] * n_steps
    assert isinstance(triples, list)
    return (
        row["started"],
        row["completed"],
        row["skipped"],
        row["current_step_index"],
        tuple(tuple(t) for t in triples),
    )


def minimum_and_replay(p: Prepared, cat: Catalog) -> tuple[int, int, int]:
    """(minimum requests, user-flows whose plan replays to the target, user-flows)."""
    table = target_table(p)
    seqs = (
        p.plan.sort("user_id", "flow_slug", "seq")
        .group_by("user_id", "flow_slug", maintain_order=True)
        .agg(pl.format("{}:{}", "action", pl.col("step_id").fill_null("")).alias("seq"))
    )
    # distinct (flow, target, plan) combinations with their multiplicity: a few hundred rows
    combos = (
        table.join(seqs, on=["user_id", "flow_slug"], how="left")
        .group_by("flow_slug", "started", "completed", "skipped", "current_step_index", "triples", "seq")
        .len()
    )
    by_flow: dict[str, list[dict[str, object]]] = {}
    for row in combos.iter_rows(named=True):
        by_flow.setdefault(str(row["flow_slug"]), []).append(row)
    minimum = replay_ok = total = 0
    for slug, rows in by_flow.items():
        flow = cat.get(slug)
        assert flow is not None
        n = len(flow.step_ids)
        targets = {_logical(r, n) for r in rows}
        best = min_requests(flow.step_ids, targets)
        for r in rows:
            count = int(str(r["len"]))
            want = _logical(r, n)
            minimum += best[want] * count
            total += count
            state = initial_state(flow.step_ids)
            seq = r["seq"] if isinstance(r["seq"], list) else []
            for item in seq:
                action, _, step = str(item).partition(":")
                state = apply(state, Action(action), step or None)
            replay_ok += count if state.logical() == want else 0
    return minimum, replay_ok, total


def measure(rows: int, seed: int, workdir: Path) -> list[Figure]:
    cat = catalog()
    export = workdir / "export.parquet"
    rows_in = write_export(cat, export, rows, seed)
    mapping = resolve_mapping(None)
    state = plan_exports([export], mapping, cat, mode="state")
    history = plan_exports([export], mapping, cat, mode="history")
    minimum, replay_ok, user_flows = minimum_and_replay(state, cat)
    planned = state.plan.height
    b = NAME
    return [
        Figure(b, "requests planned (state mode)", planned, "", f"= minimum ({minimum:,})", planned == minimum),
        Figure(
            b,
            "user-flows whose plan replays to the target",
            replay_ok,
            "",
            f"= {user_flows:,} (all)",
            replay_ok == user_flows,
        ),
        Figure(b, "minimum (BFS over the shared rules, per target)", minimum, ""),
        Figure(b, "baseline: one request per source row", rows_in, ""),
        Figure(b, "baseline: history mode (valid de-duplicated events)", history.plan.height, ""),
        Figure(b, "state mode / one-per-row", planned / rows_in, "x"),
        Figure(b, "state mode / history mode", planned / max(1, history.plan.height), "x"),
        Figure(b, "users / user-flows", f"{state.counts['users']:,} / {user_flows:,}"),
        Figure(b, "duplicate rows in the export", state.counts["events_duplicate"], ""),
    ]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated export (default 1000000)")


def run(args: argparse.Namespace) -> list[Figure]:
    rows = 5_000 if args.quick else int(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-fewest-") as tmp:
        return measure(rows, int(args.seed), Path(tmp))


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(f"python -m bench.{NAME}", __doc__.split("\n")[0] if __doc__ else "")
    add_args(p)
    return run_main("Benchmark 3: fewest requests", run, p, argv)


if __name__ == "__main__":
    raise SystemExit(main())
