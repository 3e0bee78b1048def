"""Validation against the catalog, then ordering and de-duplication.

Every row ends in exactly one of: valid (goes on to planning), dropped (a known non-state event),
quarantined (with a reason), or duplicate (a repeat of a valid row). Order of checks, first hit wins:
non-state event, mapping problems (time), user id, action, flow, step placement, step, data.
"""

from __future__ import annotations

import polars as pl

from frigade.rules import Action
from transforms.schema import DROP

STEP_ACTION_NAMES = [a.value for a in Action if a.is_step]
FLOW_ACTION_NAMES = [a.value for a in Action if not a.is_step]
ACTION_NAMES = [a.value for a in Action]

#: the columns that identify a source row in quarantine and reports
ROW_KEY = ["source_file", "source_row"]


def catalog_frames(
    step_table: list[dict[str, object]], flow_status: dict[str, str]
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(flows, steps) lookup frames from the catalog's step table and every flow's status."""
    steps = pl.DataFrame(
        step_table,
        schema={"flow_slug": pl.String, "step_id": pl.String, "step_index": pl.Int64, "step_count": pl.Int64},
    ).lazy()
    flows = pl.DataFrame(
        {"flow_slug": list(flow_status), "flow_status": list(flow_status.values())},
        schema={"flow_slug": pl.String, "flow_status": pl.String},
    ).lazy()
    return flows, steps


def _reason() -> pl.Expr:
    a, step, flow = pl.col("action"), pl.col("step_id"), pl.col("flow_slug")
    is_step_action = a.is_in(STEP_ACTION_NAMES)
    has_step = step.is_not_null() | pl.col("step_index").is_not_null()
    return (
        pl.when(pl.col("map_reason").is_not_null())
        .then(pl.col("map_reason"))
        .when(pl.col("user_id").is_null())
        .then(pl.lit("missing user id"))
        .when(a.is_null())
        .then(pl.lit("missing action"))
        .when(~a.is_in(ACTION_NAMES))
        .then(pl.format("unknown action '{}'", pl.col("raw_event")))
        .when(flow.is_null())
        .then(pl.lit("missing flow"))
        .when(pl.col("flow_status").is_null())
        .then(pl.format("unknown flow '{}' (not in the catalog)", flow))
        .when(pl.col("flow_status") != "ACTIVE")
        .then(pl.format("flow '{}' is {} (only ACTIVE flows are written)", flow, pl.col("flow_status")))
        .when(is_step_action & ~has_step)
        .then(pl.format("{} needs a step", a))
        .when(~is_step_action & has_step)
        .then(
            pl.format(
                "{} is a flow action but the row names step '{}'",
                a,
                pl.coalesce(step, pl.col("step_index").cast(pl.String)),
            )
        )
        .when(is_step_action & pl.col("resolved_step_id").is_null())
        .then(
            pl.format(
                "unknown step '{}' in flow '{}'",
                pl.coalesce(step, pl.col("step_index").cast(pl.String)),
                flow,
            )
        )
        .when(pl.col("data").is_not_null() & ~pl.col("data").str.contains(r"^\s*\{[\s\S]*\}\s*$"))
        .then(pl.lit("data is not a JSON object"))
        .otherwise(None)
    )


def classify(events: pl.LazyFrame, flows: pl.LazyFrame, steps: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``status`` (valid | dropped | quarantined) and ``reason``, with steps resolved to ids and
    their position (``step_index``) in the flow."""
    by_id = steps.select("flow_slug", pl.col("step_id").alias("_sid"), pl.col("step_index").alias("_idx_by_id"))
    by_index = steps.select("flow_slug", pl.col("step_index").alias("_sidx"), pl.col("step_id").alias("_id_by_index"))
    counts = steps.group_by("flow_slug").agg(pl.len().cast(pl.Int64).alias("step_count"))
    joined = (
        events.join(flows, on="flow_slug", how="left")
        .join(counts, on="flow_slug", how="left")
        .join(by_id, left_on=["flow_slug", "step_id"], right_on=["flow_slug", "_sid"], how="left")
        .join(by_index, left_on=["flow_slug", "step_index"], right_on=["flow_slug", "_sidx"], how="left")
        .with_columns(
            pl.when(pl.col("step_index").is_not_null())
            .then(pl.col("_id_by_index"))
            .otherwise(pl.when(pl.col("_idx_by_id").is_not_null()).then(pl.col("step_id")))
            .alias("resolved_step_id"),
        )
    )
    return joined.with_columns(
        pl.when(pl.col("action") == DROP)
        .then(pl.lit("dropped"))
        .otherwise(pl.when(_reason().is_null()).then(pl.lit("valid")).otherwise(pl.lit("quarantined")))
        .alias("status"),
        pl.when(pl.col("action") == DROP)
        .then(pl.format("non-state event '{}'", pl.col("raw_event")))
        .otherwise(_reason())
        .alias("reason"),
        pl.col("resolved_step_id").alias("step_id"),
        pl.coalesce(pl.col("step_index"), pl.col("_idx_by_id")).alias("step_index"),
    ).drop("_idx_by_id", "_id_by_index", "resolved_step_id", "flow_status")


def order_key() -> list[str]:
    """Events of one user and flow are ordered by time; ties keep the export's own order (file given
    first, then row), which is the order the source recorded them in, and the events one row became
    keep the order the mapping derived them in (the sort is stable)."""
    return ["user_id", "flow_slug", "ts", "file_order", "source_row"]


def order_and_dedupe(valid: pl.LazyFrame, file_order: dict[str, int] | None = None) -> pl.LazyFrame:
    """Sort valid events and mark duplicates: the same source event id, or where the source has none,
    the same (user, flow, step, action, time). The first in order is kept; ``duplicate`` marks the rest.

    ``file_order`` numbers the source files; without it the frame must carry a ``file_order`` column."""
    if file_order is not None:
        valid = valid.with_columns(
            pl.col("source_file").replace_strict(file_order, return_dtype=pl.Int64).alias("file_order")
        )
    ordered = valid.sort(order_key(), maintain_order=True)
    natural = pl.struct("user_id", "flow_slug", "step_id", "action", "ts")
    # Event ids are the source's own, so they identify an event across overlapping export files too.
    first = (
        pl.when(pl.col("event_id").is_not_null())
        .then(pl.col("event_id").is_first_distinct())
        .otherwise(natural.is_first_distinct())
    )
    return ordered.with_columns(
        (~first).alias("duplicate"),
        row_key(pl.col("file_order"), pl.col("source_row")).alias("row_key"),
    )


def row_key(file_order: pl.Expr, source_row: pl.Expr) -> pl.Expr:
    """One integer naming a source row across all input files."""
    return file_order * (1 << 40) + source_row
