"""Row accounting: every row of the exports lands in exactly one bucket, and the buckets add up."""

from __future__ import annotations

import polars as pl

from transforms.validate import DROPPED, VALID


def account(rows_in: int, rows: pl.DataFrame, plan: pl.DataFrame) -> dict[str, int]:
    """Each source row lands in one bucket: sent (a request came from it), redundant (valid, but
    already implied or a duplicate), dropped (non-state) or quarantined. A row that became several
    events takes the first of those buckets that any of its events reached.
    ``rows_in``: every row of the exports, also those no event came from."""
    origins = plan.get_column("origin").drop_nulls().unique()
    problem = rows.get_column("problem")
    keys = rows.get_column("row_key")
    # Events come in row order, unless a mapping made several of one row: then keys repeat.
    if keys.len() < 2 or bool((keys.diff().drop_nulls() > 0).all()) or keys.n_unique() == keys.len():
        # one event per row (the usual case): the buckets are counts, no grouping needed
        valid = int((problem == VALID).sum())
        per_bucket = {
            0: origins.len(),
            1: valid - origins.len(),
            2: int((problem > VALID).sum()),
            3: int((problem == DROPPED).sum()),
        }
        grouped = rows.height
    else:
        rank = (
            rows.with_columns(
                pl.when(pl.col("row_key").is_in(origins.implode()))
                .then(0)
                .when(pl.col("problem") == VALID)
                .then(1)
                .when(pl.col("problem") > VALID)
                .then(2)
                .otherwise(3)
                .alias("bucket")
            )
            .group_by("row_key")
            .agg(pl.col("bucket").min())
        )
        per_bucket = dict(rank.group_by("bucket").len().iter_rows())
        grouped = rank.height
    return {
        "rows_in": rows_in,
        "rows_sent": per_bucket.get(0, 0),
        "rows_redundant": per_bucket.get(1, 0),
        "rows_quarantined": per_bucket.get(2, 0),
        # Rows that produced no event at all (e.g. a wide row with no progress) count as dropped.
        "rows_dropped": per_bucket.get(3, 0) + rows_in - grouped,
        "requests_planned": plan.height,
        # the plan holds each user's requests together and each user-flow's from seq 0
        "users": int((plan.get_column("user_id") != plan.get_column("user_id").shift()).fill_null(True).sum()),
        "user_flows": int((plan.get_column("seq") == 0).sum()),
    }


def accounting_closes(counts: dict[str, int]) -> bool:
    return counts["rows_in"] == (
        counts["rows_sent"] + counts["rows_redundant"] + counts["rows_dropped"] + counts["rows_quarantined"]
    )
