"""Row accounting: every row of the exports lands in exactly one bucket, and the buckets add up.

Three kinds of rows are not sent, and only the last is loss: rows that are *not onboarding state*
(other events: ``rows_dropped``), rows that name *no user to migrate* (no id, or an anonymous visitor:
``rows_not_a_user``), and a known user's *progress not migrated* (an unknown flow or step, a bad time...:
``rows_not_migrated``). ``rows_quarantined`` is the last two together (what quarantine.parquet holds).
"""

from __future__ import annotations

import polars as pl

from transforms.schema import FLOW_DROP, MAPPED_DROP
from transforms.validate import ANONYMOUS_REASON, DROPPED, MISSING_USER_REASON, NOT_A_USER, VALID

#: quarantine.parquet's ``kind`` of a row: progress lost, or no user to migrate
NOT_MIGRATED, NOT_A_USER_KIND = "not_migrated", "not_a_user"


def account(rows_in: int, rows: pl.DataFrame, plan: pl.DataFrame) -> dict[str, int]:
    """Each source row lands in one bucket: sent (a request came from it), redundant (valid, but
    already implied or a duplicate), not migrated (a known user's progress, quarantined), not a user
    (quarantined) or dropped (non-state). A row that became several events takes the first of those
    buckets that any of its events reached; those of them counted as planned or redundant that also
    carry progress not migrated are ``rows_partly_not_migrated`` (outside the equation: the loss is
    counted by user-flow, ``not_migrated``).
    ``rows_in``: every row of the exports, also those no event came from."""
    origins = plan.get_column("origin").drop_nulls().unique()
    problem = rows.get_column("problem")
    keys = rows.get_column("row_key")
    # Events come in row order, unless a mapping made several of one row: then keys repeat.
    if keys.len() < 2 or bool((keys.diff().drop_nulls() > 0).all()) or keys.n_unique() == keys.len():
        # one event per row (the usual case): the buckets are counts, no grouping needed
        valid = int((problem == VALID).sum())
        not_a_user = int(problem.is_in(NOT_A_USER).sum())
        per_bucket = {
            0: origins.len(),
            1: valid - origins.len(),
            2: int((problem > VALID).sum()) - not_a_user,
            3: not_a_user,
            4: int((problem == DROPPED).sum()),
        }
        grouped = rows.height
        partly_lost = 0
    else:
        rank = (
            rows.with_columns(
                pl.when(pl.col("row_key").is_in(origins.implode())).then(0).otherwise(_fate() + 1).alias("bucket"),
                (_fate() == 1).alias("lost"),
            )
            .group_by("row_key")
            .agg(pl.col("bucket").min(), pl.col("lost").any())
        )
        per_bucket = dict(rank.group_by("bucket").len().iter_rows())
        grouped = rank.height
        # counted once, as planned or redundant, yet one of its events was a known user's progress lost
        partly_lost = rank.filter((pl.col("bucket") <= 1) & pl.col("lost")).height
    return {
        "rows_in": rows_in,
        "rows_sent": per_bucket.get(0, 0),
        "rows_redundant": per_bucket.get(1, 0),
        "rows_quarantined": per_bucket.get(2, 0) + per_bucket.get(3, 0),
        "rows_not_migrated": per_bucket.get(2, 0),
        "rows_not_a_user": per_bucket.get(3, 0),
        "rows_partly_not_migrated": partly_lost,
        # Rows that produced no event at all (e.g. a wide row with no progress) count as dropped.
        "rows_dropped": per_bucket.get(4, 0) + rows_in - grouped,
        "requests_planned": plan.height,
        # the plan holds each user's requests together and each user-flow's from seq 0
        "users": int((plan.get_column("user_id") != plan.get_column("user_id").shift()).fill_null(True).sum()),
        "user_flows": int((plan.get_column("seq") == 0).sum()),
    }


def _fate() -> pl.Expr:
    """An event's fate from its ``problem``, in the order a row of several events takes the first
    of: 0 valid, 1 progress not migrated, 2 not a user, 3 dropped."""
    problem = pl.col("problem")
    return (
        pl.when(problem == VALID)
        .then(0)
        .when(problem.is_in(NOT_A_USER))
        .then(2)
        .when(problem > VALID)
        .then(1)
        .otherwise(3)
    )


def is_not_a_user(reason: str) -> bool:
    """Whether a quarantine reason is one of a row that names no user to migrate (not loss)."""
    return reason.startswith((MISSING_USER_REASON, ANONYMOUS_REASON))


def quarantine_kind() -> pl.Expr:
    """quarantine.parquet's ``kind`` of a row, from its ``problem`` code."""
    return pl.when(pl.col("problem").is_in(NOT_A_USER)).then(pl.lit(NOT_A_USER_KIND)).otherwise(pl.lit(NOT_MIGRATED))


def not_migrated(quarantine: pl.DataFrame) -> dict[str, int]:
    """Whose progress was not migrated: the users and user-flows of the quarantined rows that are loss."""
    lost = quarantine.filter(pl.col("kind") == NOT_MIGRATED).select("user_id", "flow_slug")
    known = lost.filter(pl.col("user_id").is_not_null())
    return {
        "users_not_migrated": known.get_column("user_id").n_unique() if known.height else 0,
        "user_flows_not_migrated": known.unique().height,
    }


def accounting_closes(counts: dict[str, int]) -> bool:
    """rows in = sent + redundant + dropped + quarantined, the quarantined being the rows not migrated
    and the rows of no user (a record without that split, of an earlier version, closes on the sum)."""
    quarantined = counts["rows_quarantined"]
    if "rows_not_migrated" in counts and counts["rows_not_migrated"] + counts["rows_not_a_user"] != quarantined:
        return False
    return counts["rows_in"] == counts["rows_sent"] + counts["rows_redundant"] + counts["rows_dropped"] + quarantined


#: coverage's ``kind`` of what an event becomes, in the accounting's order (a row counts under the first)
COVERAGE_KINDS = ("action", NOT_MIGRATED, NOT_A_USER_KIND, "dropped")
#: coverage's ``kind`` of a lost event whose row counts under another of its events: a table of events
#: then adds up to more than the rows
ALSO_NOT_MIGRATED = "also_not_migrated"


def coverage(events: pl.LazyFrame) -> pl.LazyFrame:
    """What each of the export's event names (or state values) becomes, with its rows and users: an
    action, dropped as not onboarding state, not a user, or not migrated with the reason. A row counts
    once, under the event of it that decided its bucket in the row accounting (an action before a loss
    before no user before dropped), so each kind's rows add up to that bucket. A row's other events that
    are progress not migrated are listed too, as ``also_not_migrated`` rows beside those totals.
    ``events``: row_key, user_id, raw_event, action, problem and reason (null on valid events)."""
    rank = _fate()
    kind = rank.replace_strict(list(range(len(COVERAGE_KINDS))), list(COVERAGE_KINDS), return_dtype=pl.String)
    becomes = (
        pl.when(rank == 0)
        .then(pl.col("action"))
        .when((rank == 3) & (pl.col("action") == MAPPED_DROP))
        .then(pl.lit("dropped: the mapping's action_map says DROP"))
        .when((rank == 3) & (pl.col("action") == FLOW_DROP))
        .then(pl.lit("dropped: the mapping's flow_map says DROP"))
        .when(rank == 3)
        .then(pl.lit("dropped: not onboarding state"))
        .otherwise(
            pl.format(
                "{} ({})", pl.when(rank == 1).then(pl.lit("not migrated")).otherwise(pl.lit("not a user")), "reason"
            )
        )
    )
    name = pl.coalesce("raw_event", "action", pl.lit("(no event name)"))
    named = events.select(
        "row_key", "user_id", name.alias("event"), rank.alias("_rank"), kind.alias("kind"), becomes.alias("becomes")
    )
    deciding = named.sort("row_key", "_rank", maintain_order=True).unique("row_key", keep="first", maintain_order=True)
    # a lost event of a row counted under another of its events (a wide row's other column) is loss all
    # the same: listed too, as its own kind, outside the rows' totals
    also = (
        named.filter(pl.col("_rank") == 1)
        .unique(["row_key", "event", "becomes"], maintain_order=True)
        .join(deciding, on=["row_key", "event", "becomes"], how="anti")
        .with_columns(pl.lit(ALSO_NOT_MIGRATED).alias("kind"), pl.lit(len(COVERAGE_KINDS)).alias("_rank"))
    )
    return (
        pl.concat([deciding, also.select(deciding.collect_schema().names())], how="vertical_relaxed")
        .group_by("event", "kind", "becomes")
        .agg(pl.len().alias("rows"), pl.col("user_id").drop_nulls().n_unique().alias("users"), pl.col("_rank").first())
        .sort("_rank", "rows", "event", descending=[False, True, False])
        .select("event", "rows", "users", "becomes", "kind")
    )
