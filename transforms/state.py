"""Replay of the flow-state rules over ordered events, vectorised.

The rules live once, in ``frigade.rules``; this is their closed form over a whole event log, proved
equal to ``frigade.rules.replay`` by a property test over random action sequences:
- only events after the user's last NOT_STARTED_FLOW of the flow count ("the epoch");
- a step is skipped if the epoch has a SKIPPED_STEP for it; started / completed if there is a
  started-setting / COMPLETED_STEP after its last NOT_STARTED_STEP;
- the flow is started by any step action but NOT_STARTED_STEP and by STARTED_FLOW / COMPLETED_FLOW;
- the pointer is where the epoch's last STARTED/COMPLETED/SKIPPED_STEP put it, else 0 when started,
  else -1.

Besides the state, each fact keeps the time and data of the event that established it, so a plan
that sets the fact can carry that event's own ``createdAt`` and ``data``.
"""

from __future__ import annotations

import polars as pl

from frigade.rules import Action

A = Action
FLOW_KEY = ["user_id", "flow_slug"]
STEP_KEY = ["user_id", "flow_slug", "step_id"]
_STARTS_FLOW = [A.STARTED_STEP, A.COMPLETED_STEP, A.SKIPPED_STEP, A.STARTED_FLOW, A.COMPLETED_FLOW]
_MOVES_POINTER = [A.STARTED_STEP, A.COMPLETED_STEP, A.SKIPPED_STEP]

FLOW_STATE_COLUMNS = ["started", "completed", "skipped", "current_step_index"]
STEP_STATE_COLUMNS = ["step_started", "step_completed", "step_skipped"]


def _first(col: str, when: pl.Expr) -> pl.Expr:
    return pl.col(col).filter(when).first()


def _epoch(events: pl.LazyFrame) -> pl.LazyFrame:
    """Number the ordered events and keep those after each user-flow's last reset."""
    a = pl.col("action")
    numbered = events.with_row_index("ord").with_columns(
        pl.col("ord").filter(a == A.NOT_STARTED_FLOW).max().over(FLOW_KEY).alias("reset_ord"),
    )
    return numbered.filter(pl.col("reset_ord").is_null() | (pl.col("ord") > pl.col("reset_ord")))


def target_state(events: pl.LazyFrame, steps: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(flows, steps) target state of every user-flow in ``events``.

    ``events`` must be valid, de-duplicated and sorted (user, flow, time, tie-break) with columns
    user_id, group_id, flow_slug, step_id, step_index, action, ts, data, and row_key (the source
    row's identity, carried to the plan so every request names the row it came from). ``steps`` is the catalog step
    table (flow_slug, step_id, step_index, step_count)."""
    a = pl.col("action")
    # Polars keeps each group's rows in input order, so first()/last() follow the sorted events.
    flow_meta = events.group_by(FLOW_KEY).agg(
        pl.col("group_id").drop_nulls().last().alias("group_id"),
        pl.col("ts").min().alias("first_ts"),
        pl.col("ts").max().alias("last_ts"),
        pl.col("row_key").last().alias("last_row"),
        pl.col("ts").filter(a == A.NOT_STARTED_FLOW).last().alias("reset_ts"),
        pl.col("data").filter(a == A.NOT_STARTED_FLOW).last().alias("reset_data"),
        pl.col("row_key").filter(a == A.NOT_STARTED_FLOW).last().alias("reset_row"),
    )
    epoch = _epoch(events)
    moves = a.is_in(_MOVES_POINTER)
    flow_facts = epoch.group_by(FLOW_KEY).agg(
        a.is_in(_STARTS_FLOW).any().alias("started"),
        (a == A.COMPLETED_FLOW).any().alias("completed"),
        (a == A.SKIPPED_FLOW).any().alias("skipped"),
        pl.col("action").filter(moves).last().alias("_ptr_action"),
        pl.col("step_index").filter(moves).last().alias("_ptr_step"),
        pl.col("ts").filter(moves).last().alias("ptr_ts"),
        pl.col("data").filter(moves).last().alias("ptr_data"),
        pl.col("row_key").filter(moves).last().alias("ptr_row"),
        _first("ts", a.is_in(_STARTS_FLOW)).alias("start_ts"),
        _first("data", a.is_in(_STARTS_FLOW)).alias("start_data"),
        _first("row_key", a.is_in(_STARTS_FLOW)).alias("start_row"),
        _first("ts", a == A.COMPLETED_FLOW).alias("completed_ts"),
        _first("data", a == A.COMPLETED_FLOW).alias("completed_data"),
        _first("row_key", a == A.COMPLETED_FLOW).alias("completed_row"),
        _first("ts", a == A.SKIPPED_FLOW).alias("skipped_ts"),
        _first("data", a == A.SKIPPED_FLOW).alias("skipped_data"),
        _first("row_key", a == A.SKIPPED_FLOW).alias("skipped_row"),
        pl.col("ts").min().alias("epoch_first_ts"),
    )
    counts = steps.group_by("flow_slug").agg(pl.len().cast(pl.Int64).alias("step_count"))
    flows = (
        flow_meta.join(flow_facts, on=FLOW_KEY, how="left")
        .join(counts, on="flow_slug", how="left")
        .with_columns(
            pl.col("started").fill_null(False),
            pl.col("completed").fill_null(False),
            pl.col("skipped").fill_null(False),
        )
        .with_columns(
            pl.when(pl.col("_ptr_action") == A.STARTED_STEP)
            .then(pl.col("_ptr_step"))
            .when(pl.col("_ptr_action").is_not_null())
            .then(pl.min_horizontal(pl.col("_ptr_step") + 1, pl.col("step_count") - 1))
            .when(pl.col("started"))
            .then(pl.lit(0, pl.Int64))
            .otherwise(pl.lit(-1, pl.Int64))
            .cast(pl.Int64)
            .alias("current_step_index"),
        )
        .drop("_ptr_action", "_ptr_step")
    )

    step_events = epoch.filter(a.is_in([x.value for x in Action if x.is_step])).with_columns(
        pl.col("ord").filter(a == A.NOT_STARTED_STEP).max().over(STEP_KEY).alias("nss_ord"),
    )
    live = pl.col("nss_ord").is_null() | (pl.col("ord") > pl.col("nss_ord"))
    starts_step = a.is_in(_MOVES_POINTER)
    step_facts = step_events.group_by(STEP_KEY).agg(
        (starts_step & live).any().alias("step_started"),
        ((a == A.COMPLETED_STEP) & live).any().alias("step_completed"),
        (a == A.SKIPPED_STEP).any().alias("step_skipped"),
        _first("ts", starts_step & live).alias("started_ts"),
        _first("data", starts_step & live).alias("started_data"),
        _first("row_key", starts_step & live).alias("started_row"),
        _first("ts", (a == A.COMPLETED_STEP) & live).alias("completed_ts"),
        _first("data", (a == A.COMPLETED_STEP) & live).alias("completed_data"),
        _first("row_key", (a == A.COMPLETED_STEP) & live).alias("completed_row"),
        _first("ts", a == A.SKIPPED_STEP).alias("skipped_ts"),
        _first("data", a == A.SKIPPED_STEP).alias("skipped_data"),
        _first("row_key", a == A.SKIPPED_STEP).alias("skipped_row"),
        pl.col("ts").filter(a == A.NOT_STARTED_STEP).last().alias("nss_ts"),
        pl.col("data").filter(a == A.NOT_STARTED_STEP).last().alias("nss_data"),
        pl.col("row_key").filter(a == A.NOT_STARTED_STEP).last().alias("nss_row"),
    )
    grid = flows.select(FLOW_KEY).join(steps.select("flow_slug", "step_id", "step_index"), on="flow_slug")
    step_states = grid.join(step_facts, on=STEP_KEY, how="left").with_columns(
        pl.col(c).fill_null(False) for c in STEP_STATE_COLUMNS
    )
    return flows, step_states
