"""Buckets of users: ranges of ids, every id in exactly one, cut evenly."""

from __future__ import annotations

import polars as pl

from transforms.buckets import Buckets, buckets_of, user_buckets


def test_every_id_falls_in_exactly_one_bucket_even_ids_the_cuts_were_not_taken_from() -> None:
    ids = [f"user-{i:04d}" for i in range(0, 1000, 3)]
    buckets = user_buckets(pl.Series(ids), rows=20 * len(ids), per_bucket=1000)
    assert len(buckets) == 7
    others = pl.DataFrame({"user_id": [*ids, "", "a", "user-0001", "zzz", None]})
    # each bucket sorted, one after the other: the whole sorted, every id once
    hits = pl.concat([others.filter(buckets.where(k)).sort("user_id") for k in range(len(buckets))])
    assert hits["user_id"].to_list() == others.sort("user_id")["user_id"].to_list()
    cut_from = pl.DataFrame({"user_id": ids})
    sizes = [cut_from.filter(buckets.where(k)).height for k in range(len(buckets))]
    assert max(sizes) - min(sizes) <= 1, sizes


def test_small_work_is_one_bucket_that_keeps_everything() -> None:
    frame = pl.LazyFrame({"user_id": ["b", "a", None], "x": [1, 2, 3]})
    assert buckets_of(frame, per_bucket=3) == Buckets()
    assert frame.filter(Buckets().where(0)).collect().height == 3
    # never more buckets than users
    assert len(buckets_of(frame, per_bucket=1)) == 2
