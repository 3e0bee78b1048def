"""Buckets of users: work that would hold every user's state at once (the end of a run, the state
folder) done a bucket of users at a time, in flat memory.

A bucket is a range of user ids, cut where the sorted ids fall evenly: a frame sorted by user id
within each bucket, written bucket after bucket, is the frame sorted as a whole, so the files a
bucketed step writes are those it would write in one piece. Every id falls in exactly one bucket,
including ids the cut points were not taken from."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

#: rows of returned state (one per user x flow x step) one bucket holds, about 10 MB as a frame
ROWS_PER_BUCKET = 60_000


@dataclass(frozen=True)
class Buckets:
    #: the first id of every bucket but the first, ascending
    cuts: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.cuts) + 1

    def where(self, bucket: int, column: str = "user_id") -> pl.Expr:
        """The rows of ``bucket`` (0-based), by their ``column``."""
        user = pl.col(column)
        after = user >= self.cuts[bucket - 1] if bucket > 0 else pl.lit(True)
        before = user < self.cuts[bucket] if bucket < len(self.cuts) else pl.lit(True)
        # a missing id sorts first: the first bucket's
        return (after & before) | user.is_null() if bucket == 0 else after & before


def user_buckets(users: pl.Series, rows: int, per_bucket: int = ROWS_PER_BUCKET) -> Buckets:
    """Buckets of about ``per_bucket`` of ``rows`` each, cut evenly over the distinct ``users``;
    one bucket (nothing cut) when ``rows`` fit in one."""
    wanted = -(-rows // max(per_bucket, 1))
    ids = users.drop_nulls().unique().sort()
    if wanted <= 1 or ids.len() < 2:
        return Buckets()
    wanted = min(wanted, ids.len())
    cuts = [ids[i * ids.len() // wanted] for i in range(1, wanted)]
    return Buckets(tuple(dict.fromkeys(str(c) for c in cuts)))


def buckets_of(frame: pl.LazyFrame, per_bucket: int = ROWS_PER_BUCKET) -> Buckets:
    """The buckets of ``frame``'s rows by their users: only its user ids are read."""
    rows = frame.select(pl.len()).collect(engine="streaming").item()
    if rows <= per_bucket:
        return Buckets()
    # streamed: the ids are read a morsel at a time, only the distinct ones kept
    users = frame.select(pl.col("user_id").unique()).collect(engine="streaming")["user_id"]
    return user_buckets(users, rows, per_bucket)
