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


_STEP_ACTIONS = [x.value for x in Action if x.is_step]


def _facts(events: pl.LazyFrame) -> pl.DataFrame:
    """The events with an integer user-flow id ``uf``, their position ``ord`` and one boolean per
    action class, materialised once: every aggregation below is a fast-path min/max/any/first/last
    over these columns, and facts' times and data are gathered by position afterwards.

    ``events`` is sorted by (user, flow, time, ...), so each user-flow is one contiguous run: ``uf``
    is its run number, and "after the user-flow's last reset" is "no reset from here to the end of
    the run", found with two backward fills instead of a window over string keys."""
    a = pl.col("action")
    ord_ = pl.int_range(pl.len(), dtype=pl.Int64)
    new_run = (pl.col("user_id") != pl.col("user_id").shift()) | (pl.col("flow_slug") != pl.col("flow_slug").shift())
    df = (
        events.select("user_id", "group_id", "flow_slug", "step_index", "action", "ts", "data", "row_key")
        .with_columns(
            ord_.alias("ord"),
            new_run.fill_null(True).cum_sum().cast(pl.Int64).alias("uf"),
            (a == A.NOT_STARTED_FLOW).alias("is_reset"),
        )
        .with_columns(
            # the last row of each run, and the first reset at or after each row
            pl.when(pl.col("uf") != pl.col("uf").shift(-1).fill_null(-1))
            .then(pl.col("ord"))
            .backward_fill()
            .alias("_run_end"),
            pl.when(pl.col("is_reset")).then(pl.col("ord")).backward_fill().alias("_next_reset"),
        )
        .with_columns(
            (pl.col("_next_reset").is_null() | (pl.col("_next_reset") > pl.col("_run_end"))).alias("epoch"),
        )
        .drop("_run_end", "_next_reset")
        .collect()
    )
    return df


def _gather(df: pl.DataFrame, ords: pl.Series, prefix: str) -> list[pl.Series]:
    """ts / data / row_key of the events at ``ords`` (null where ``ords`` is null)."""
    idx = ords.cast(pl.UInt32)
    return [
        df.get_column("ts").gather(idx).alias(f"{prefix}_ts"),
        df.get_column("data").gather(idx).alias(f"{prefix}_data"),
        df.get_column("row_key").gather(idx).alias(f"{prefix}_row"),
    ]


def _ord_where(cond: pl.Expr) -> pl.Expr:
    return pl.when(cond).then(pl.col("ord"))


def target_state(events: pl.LazyFrame, steps: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(flows, steps) target state of every user-flow in ``events``.

    ``events`` must be valid, de-duplicated and sorted (user, flow, time, tie-break) with columns
    user_id, group_id, flow_slug, step_id, step_index, action, ts, data, and row_key (the source
    row's identity, carried to the plan so every request names the row it came from). ``steps`` is the catalog step
    table (flow_slug, step_id, step_index, step_count).

    The frames come back materialised (as lazy frames over collected data)."""
    df = _facts(events)
    a = pl.col("action")
    e = pl.col("epoch")
    moves = a.is_in(_MOVES_POINTER)
    agg = (
        df.lazy()
        .with_columns(
            _ord_where(pl.col("group_id").is_not_null()).alias("_o_group"),
            _ord_where(pl.col("is_reset")).alias("_o_reset"),
            _ord_where(moves & e).alias("_o_ptr"),
            _ord_where(a.is_in(_STARTS_FLOW) & e).alias("_o_start"),
            _ord_where((a == A.COMPLETED_FLOW) & e).alias("_o_completed"),
            _ord_where((a == A.SKIPPED_FLOW) & e).alias("_o_skipped"),
            pl.when(e).then(pl.col("ts")).alias("_epoch_ts"),
        )
        .group_by("uf")
        .agg(
            pl.col("user_id").first(),
            pl.col("flow_slug").first(),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
            pl.col("row_key").last().alias("last_row"),
            pl.col("_o_group").max(),
            pl.col("_o_reset").max(),
            pl.col("_o_ptr").max(),
            pl.col("_o_start").min(),
            pl.col("_o_completed").min(),
            pl.col("_o_skipped").min(),
            pl.col("_epoch_ts").min().alias("epoch_first_ts"),
        )
        .collect()
    )
    ptr = agg.get_column("_o_ptr").cast(pl.UInt32)
    flows = agg.with_columns(
        df.get_column("group_id").gather(agg.get_column("_o_group").cast(pl.UInt32)).alias("group_id"),
        *_gather(df, agg.get_column("_o_reset"), "reset"),
        pl.Series("started", agg.get_column("_o_start").is_not_null()),
        pl.Series("completed", agg.get_column("_o_completed").is_not_null()),
        pl.Series("skipped", agg.get_column("_o_skipped").is_not_null()),
        df.get_column("action").gather(ptr).alias("_ptr_action"),
        df.get_column("step_index").gather(ptr).alias("_ptr_step"),
        *_gather(df, agg.get_column("_o_ptr"), "ptr"),
        *_gather(df, agg.get_column("_o_start"), "start"),
        *_gather(df, agg.get_column("_o_completed"), "completed"),
        *_gather(df, agg.get_column("_o_skipped"), "skipped"),
    )
    counts = steps.group_by("flow_slug").agg(pl.len().cast(pl.Int64).alias("step_count"))
    flows_lf = (
        flows.lazy()
        .join(counts, on="flow_slug", how="left")
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
        .select(
            *FLOW_KEY,
            "group_id",
            "first_ts",
            "last_ts",
            "last_row",
            "reset_ts",
            "reset_data",
            "reset_row",
            "started",
            "completed",
            "skipped",
            "ptr_ts",
            "ptr_data",
            "ptr_row",
            "start_ts",
            "start_data",
            "start_row",
            "completed_ts",
            "completed_data",
            "completed_row",
            "skipped_ts",
            "skipped_data",
            "skipped_row",
            "epoch_first_ts",
            "step_count",
            "current_step_index",
            "uf",
        )
    )
    flows_df = flows_lf.collect()

    # Steps: the epoch's step events. "Live" = after the step's last NOT_STARTED_STEP.
    starts_step = a.is_in(_MOVES_POINTER)
    nss = a == A.NOT_STARTED_STEP
    live = pl.col("_nss").is_null() | (pl.col("ord") > pl.col("_nss"))
    step_agg = (
        df.lazy()
        .filter(e & a.is_in(_STEP_ACTIONS))
        .select("uf", "step_index", "ord", "action")
        .with_columns(_ord_where(nss).max().over("uf", "step_index").alias("_nss"))
        .group_by("uf", "step_index")
        .agg(
            _ord_where(starts_step & live).min().alias("_o_started"),
            _ord_where((a == A.COMPLETED_STEP) & live).min().alias("_o_completed"),
            _ord_where(a == A.SKIPPED_STEP).min().alias("_o_skipped"),
            pl.col("_nss").max().alias("_o_nss"),
        )
        .collect()
    )
    step_facts = step_agg.select("uf", "step_index").with_columns(
        step_agg.get_column("_o_started").is_not_null().alias("step_started"),
        step_agg.get_column("_o_completed").is_not_null().alias("step_completed"),
        step_agg.get_column("_o_skipped").is_not_null().alias("step_skipped"),
        *_gather(df, step_agg.get_column("_o_started"), "started"),
        *_gather(df, step_agg.get_column("_o_completed"), "completed"),
        *_gather(df, step_agg.get_column("_o_skipped"), "skipped"),
        *_gather(df, step_agg.get_column("_o_nss"), "nss"),
    )
    grid = (
        flows_df.lazy().select("uf", *FLOW_KEY).join(steps.select("flow_slug", "step_id", "step_index"), on="flow_slug")
    )
    step_states = (
        grid.join(step_facts.lazy(), on=["uf", "step_index"], how="left")
        .with_columns(pl.col(c).fill_null(False) for c in STEP_STATE_COLUMNS)
        .drop("uf")
        .collect()
    )
    return flows_df.drop("uf").lazy(), step_states.lazy()
