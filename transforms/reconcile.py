"""Reconciliation: the state the export implies vs the state Frigade returned, field by field.

Only the fields the migration's requests set are compared: flow and step started / completed /
skipped, the pointer, and (when asked) the flow's lastActionAt. ``visible`` and ``blocked`` are
targeting, which no write sets: they are summarised (``targeting_summary``), never mismatches."""

from __future__ import annotations

import polars as pl

FLOW_FIELDS = {
    "started": "flow_started",
    "completed": "flow_completed",
    "skipped": "flow_skipped",
    "current_step_index": "current_step_index",
}
STEP_FIELDS = {"step_started": "step_started", "step_completed": "step_completed", "step_skipped": "step_skipped"}
RECONCILE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "step_id": pl.String(),
    "field": pl.String(),
    "expected": pl.String(),
    "actual": pl.String(),
}


def latest_snapshot(parts: pl.DataFrame) -> pl.DataFrame:
    """One state per user: the last captured (a resumed run captures some users twice)."""
    if parts.is_empty():
        return parts
    last = parts.group_by("user_id").agg(pl.col("captured_at").max())
    return parts.join(last, on=["user_id", "captured_at"], how="semi").sort("user_id", "flow_slug", "step_index")


def _diff(joined: pl.LazyFrame, fields: dict[str, str], step: pl.Expr) -> list[pl.LazyFrame]:
    return [
        joined.filter(pl.col(exp).ne_missing(pl.col(act))).select(
            "user_id",
            "flow_slug",
            step.alias("step_id"),
            pl.lit(name.removeprefix("step_")).alias("field")
            if name.startswith("step_")
            else pl.lit(name).alias("field"),
            pl.col(exp).cast(pl.String).alias("expected"),
            pl.col(act).cast(pl.String).alias("actual"),
        )
        for name, (exp, act) in ((n, (f"exp_{n}", f"act_{a}")) for n, a in fields.items())
    ]


def reconcile(
    expected_flows: pl.DataFrame,
    expected_steps: pl.DataFrame,
    snapshot: pl.DataFrame,
    users: pl.Series,
    last_sent: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Mismatches for ``users``: one row per differing field; a user-flow missing from the snapshot is
    one row with field ``state`` (expected present, actual absent).

    ``last_sent`` (user_id, flow_slug, created_at) adds a check that the flow's lastActionAt is the
    createdAt of the last request sent for it, i.e. that back-dated times took effect."""
    ef = (
        expected_flows.lazy()
        .filter(pl.col("user_id").is_in(users.implode()))
        .select(
            "user_id",
            "flow_slug",
            *[pl.col(n).alias(f"exp_{n}") for n in FLOW_FIELDS],
        )
    )
    snap = snapshot.lazy()
    sf = snap.unique(["user_id", "flow_slug"], keep="first").select(
        "user_id", "flow_slug", "flow_last_action_at", *[pl.col(a).alias(f"act_{a}") for a in FLOW_FIELDS.values()]
    )
    flows = ef.join(sf, on=["user_id", "flow_slug"], how="left")
    missing = flows.filter(pl.col("act_flow_started").is_null()).select(
        "user_id",
        "flow_slug",
        pl.lit(None, pl.String).alias("step_id"),
        pl.lit("state").alias("field"),
        pl.lit("present").alias("expected"),
        pl.lit("absent").alias("actual"),
    )
    present = flows.filter(pl.col("act_flow_started").is_not_null())
    es = (
        expected_steps.lazy()
        .filter(pl.col("user_id").is_in(users.implode()))
        .select("user_id", "flow_slug", "step_id", *[pl.col(n).alias(f"exp_{n}") for n in STEP_FIELDS])
    )
    ss = snap.select("user_id", "flow_slug", "step_id", *[pl.col(a).alias(f"act_{a}") for a in STEP_FIELDS.values()])
    steps = es.join(ss, on=["user_id", "flow_slug", "step_id"], how="inner")
    parts = [
        missing,
        *_diff(present, FLOW_FIELDS, pl.lit(None, pl.String)),
        *_diff(steps, STEP_FIELDS, pl.col("step_id")),
    ]
    if last_sent is not None:
        parts.append(_last_action_diff(present, last_sent.lazy()))
    out = pl.concat([p.select([pl.col(c).cast(t) for c, t in RECONCILE_SCHEMA.items()]) for p in parts])
    return out.sort("user_id", "flow_slug", "step_id", "field", nulls_last=False).collect()


def _last_action_diff(present: pl.LazyFrame, last_sent: pl.LazyFrame) -> pl.LazyFrame:
    """Compared at millisecond precision, the precision of the times sent on the wire."""
    got = pl.col("flow_last_action_at").str.to_datetime(time_zone="UTC", time_unit="us", strict=False)
    joined = present.join(last_sent, on=["user_id", "flow_slug"], how="inner").with_columns(
        got.dt.truncate("1ms").alias("_got"), pl.col("created_at").dt.truncate("1ms").alias("_want")
    )
    return joined.filter(pl.col("_got").ne_missing(pl.col("_want"))).select(
        "user_id",
        "flow_slug",
        pl.lit(None, pl.String).alias("step_id"),
        pl.lit("last_action_at").alias("field"),
        pl.col("_want").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias("expected"),
        pl.col("flow_last_action_at").alias("actual"),
    )


def last_sent_times(plan: pl.DataFrame, sent_ids: pl.Series) -> pl.DataFrame:
    """createdAt of the last request that took effect per user-flow (plan order)."""
    return (
        plan.filter(pl.col("request_id").is_in(sent_ids.implode()))
        .sort("user_id", "flow_slug", "seq")
        .group_by("user_id", "flow_slug")
        .agg(pl.col("created_at").last())
    )


def targeting_summary(snapshot: pl.DataFrame) -> dict[str, int]:
    """How many user-flows the server shows hidden by targeting: not visible although neither
    completed nor skipped (a completed or skipped flow is hidden by its own state)."""
    if snapshot.is_empty():
        return {"user_flows": 0, "hidden_by_targeting": 0}
    flows = snapshot.unique(["user_id", "flow_slug"])
    hidden = flows.filter(~pl.col("flow_visible") & ~pl.col("flow_completed") & ~pl.col("flow_skipped"))
    return {"user_flows": flows.height, "hidden_by_targeting": hidden.height}
