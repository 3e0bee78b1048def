"""Audit: the state difference between two snapshots (one row per user x flow x step, as runs write).

``diff`` lists each changed field from what to what (not ``visible``, which is targeting: no write sets
it); ``transitions`` counts, per flow, the user-flows that moved from one status to another, so a
move back shows even where the net counts stay the same; ``regressions`` lists who went backwards;
``funnel`` counts, per flow and step, the users who have that step completed.
"""

from __future__ import annotations

import polars as pl

from transforms.state import FLOW_KEY, STEP_KEY

#: the flow fields a migration sets (``flow_visible`` is targeting, and left out)
FLOW_FIELDS = ["flow_started", "flow_completed", "flow_skipped", "current_step_index"]
STEP_FIELDS = ["step_started", "step_completed", "step_skipped"]
AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "step_id": pl.String(),
    "field": pl.String(),
    "before": pl.String(),
    "after": pl.String(),
}


def _changes(a: pl.LazyFrame, b: pl.LazyFrame, key: list[str], fields: list[str]) -> list[pl.LazyFrame]:
    joined = a.select(*key, *fields).join(b.select(*key, *fields), on=key, how="inner", suffix="__b")
    step = pl.col("step_id") if "step_id" in key else pl.lit(None, pl.String)
    return [
        joined.filter(pl.col(f).ne_missing(pl.col(f + "__b"))).select(
            "user_id",
            "flow_slug",
            step.alias("step_id"),
            pl.lit(f).alias("field"),
            pl.col(f).cast(pl.String).alias("before"),
            pl.col(f + "__b").cast(pl.String).alias("after"),
        )
        for f in fields
    ]


def _presence(a: pl.LazyFrame, b: pl.LazyFrame) -> list[pl.LazyFrame]:
    ua, ub = a.select("user_id").unique(), b.select("user_id").unique()
    absent = pl.lit(None, pl.String)

    def rows(only: pl.LazyFrame, before: str, after: str) -> pl.LazyFrame:
        return only.select(
            "user_id",
            absent.alias("flow_slug"),
            absent.alias("step_id"),
            pl.lit("user").alias("field"),
            pl.lit(before).alias("before"),
            pl.lit(after).alias("after"),
        )

    return [
        rows(ua.join(ub, on="user_id", how="anti"), "present", "absent"),
        rows(ub.join(ua, on="user_id", how="anti"), "absent", "present"),
    ]


def diff(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Every field that differs between A and B, for users in both; users in only one, once each."""
    la, lb = a.lazy(), b.lazy()
    fa, fb = la.unique(FLOW_KEY, keep="first"), lb.unique(FLOW_KEY, keep="first")
    parts = [*_changes(fa, fb, FLOW_KEY, FLOW_FIELDS), *_changes(la, lb, STEP_KEY, STEP_FIELDS), *_presence(la, lb)]
    out = pl.concat([p.select([pl.col(c).cast(t) for c, t in AUDIT_SCHEMA.items()]) for p in parts])
    return out.sort("user_id", "flow_slug", "step_id", "field", nulls_last=False).collect()


def counts_by_flow_and_field(changes: pl.DataFrame) -> pl.DataFrame:
    return (
        changes.filter(pl.col("field") != "user")
        .group_by("flow_slug", "field")
        .agg(pl.len().alias("changes"), pl.col("user_id").n_unique().alias("users"))
        .sort("flow_slug", "field")
    )


def funnel(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Per flow and step (in step order): users with the step completed in A and in B."""

    def count(s: pl.DataFrame, side: str) -> pl.DataFrame:
        return s.group_by("flow_slug", "step_index", "step_id").agg(
            pl.col("step_completed").sum().cast(pl.Int64).alias(side)
        )

    return (
        count(a, "completed_a")
        .join(count(b, "completed_b"), on=["flow_slug", "step_index", "step_id"], how="full", coalesce=True)
        .with_columns(pl.col("completed_a", "completed_b").fill_null(0))
        .sort("flow_slug", "step_index")
    )


def regressions(changes: pl.DataFrame) -> pl.DataFrame:
    """The changes that took progress away: a started, completed or skipped flag from true to false."""
    lost = pl.col("field").is_in(["flow_started", "flow_completed", "flow_skipped", *STEP_FIELDS])
    return changes.filter(lost & (pl.col("before") == "true") & (pl.col("after") == "false"))


def flow_funnel(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Per flow: users with the flow started, completed and skipped, in A and in B."""
    flags = ["started", "completed", "skipped"]

    def count(s: pl.DataFrame, side: str) -> pl.DataFrame:
        return (
            s.unique(FLOW_KEY, keep="first")
            .group_by("flow_slug")
            .agg(pl.col(f"flow_{f}").sum().cast(pl.Int64).alias(f"{f}_{side}") for f in flags)
        )

    cols = [f"{f}_{side}" for f in flags for side in ("a", "b")]
    return (
        count(a, "a")
        .join(count(b, "b"), on="flow_slug", how="full", coalesce=True)
        .with_columns(pl.col(cols).fill_null(0))
        .select("flow_slug", *cols)
        .sort("flow_slug")
    )


#: a user-flow's status, most advanced first: the first of its flags that is set names it
STATUSES = ("completed", "skipped", "started", "not started")


def flow_status() -> pl.Expr:
    """The status of a snapshot's flow row: completed, skipped, started or not started."""
    status = pl.lit("not started")
    for flag in ("started", "skipped", "completed"):
        status = pl.when(pl.col(f"flow_{flag}").fill_null(False)).then(pl.lit(flag)).otherwise(status)
    return status


def _went_back(before: pl.Expr, after: pl.Expr) -> pl.Expr:
    """A move that takes the flag naming the earlier status away (completed or skipped to anything
    else, started to not started)."""
    return (
        (before != after) & (before != "not started") & ~((before == "started") & after.is_in(["completed", "skipped"]))
    )


def transitions(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Per flow, the user-flows (of users in both snapshots) that moved from one status to another
    (``before`` -> ``after``, with ``regression`` for a move back), most first; unchanged ones are not
    listed."""
    fa = a.unique(FLOW_KEY, keep="first").select(*FLOW_KEY, flow_status().alias("before"))
    fb = b.unique(FLOW_KEY, keep="first").select(*FLOW_KEY, flow_status().alias("after"))
    moved = fa.join(fb, on=FLOW_KEY, how="inner").filter(pl.col("before") != pl.col("after"))
    return (
        moved.group_by("flow_slug", "before", "after")
        .agg(pl.len().alias("user_flows"))
        .with_columns(_went_back(pl.col("before"), pl.col("after")).alias("regression"))
        .sort(["flow_slug", "user_flows", "before", "after"], descending=[False, True, False, False])
    )
