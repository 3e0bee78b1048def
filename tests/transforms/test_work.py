"""From the plan to the push's work: what is still pending on a resume, and batches of whole users."""

from __future__ import annotations

import polars as pl

from lifecycle.runfolder import OUTCOME_SCHEMA
from transforms.work import chunk_reach, iter_batches, iter_user_requests, longest_users_first, pending_requests

PLAN = pl.DataFrame(
    {
        "request_id": [f"u1|f|{i}" for i in range(3)] + [f"u2|f|{i}" for i in range(2)],
        "user_id": ["u1"] * 3 + ["u2"] * 2,
        "flow_slug": ["f"] * 5,
        "seq": [0, 1, 2, 0, 1],
    }
)


def outcomes(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "request_id": r,
                "user_id": r.split("|")[0],
                "flow_slug": "f",
                "seq": int(r.split("|")[2]),
                "status": 201,
                "attempts": 1,
                "ok": True,
                "error_class": None,
                "message": None,
                "outcome": o,
                "at": 0.0,
                "attempt": 1,
            }
            for r, o, _ in rows
        ],
        schema=OUTCOME_SCHEMA,
    )


def test_a_resume_keeps_the_plan_order_of_users() -> None:
    """Dispatch and its journal follow the plan's order (users by hash, not by name)."""
    plan = pl.DataFrame(
        {
            "request_id": ["u9|f|0", "u1|f|0", "u5|f|0", "u5|f|1"],
            "user_id": ["u9", "u1", "u5", "u5"],
            "flow_slug": ["f"] * 4,
            "seq": [0, 0, 0, 1],
        }
    )
    got = pending_requests(plan, outcomes([("u1|f|0", "sent", "")]))
    assert got["request_id"].to_list() == ["u9|f|0", "u5|f|0", "u5|f|1"]


def test_sent_and_rejected_are_done_failed_is_retried_held_only_behind_a_rejection() -> None:
    got = pending_requests(
        PLAN,
        outcomes(
            [
                ("u1|f|0", "sent", ""),
                ("u1|f|1", "failed", ""),
                ("u1|f|2", "held", ""),
                ("u2|f|0", "rejected", ""),
                ("u2|f|1", "held", ""),
            ]
        ),
    )
    assert got["request_id"].to_list() == ["u1|f|1", "u1|f|2"]
    assert pending_requests(PLAN, outcomes([]))["request_id"].to_list() == PLAN["request_id"].to_list()


def test_batches_keep_each_user_whole_and_in_plan_order() -> None:
    plan = pl.DataFrame({"user_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 1, "seq": [0, 1, 2, 0, 1, 2, 0]})
    batches = list(iter_batches(plan, 4))
    assert [b["user_id"].unique(maintain_order=True).to_list() for b in batches] == [["a"], ["b", "c"]]
    assert sum(b.height for b in batches) == plan.height


def test_a_batch_goes_longest_user_first_a_chunk_at_a_time_each_user_whole_and_in_order() -> None:
    counts = {"a": 1, "b": 4, "c": 2, "d": 4, "e": 1}
    rows = [(u, i) for u, n in counts.items() for i in range(n)]
    batch = pl.DataFrame({"user_id": [u for u, _ in rows], "seq": [i for _, i in rows]})

    def users(frame: pl.DataFrame) -> list[str]:
        timed = frame.with_columns(created_at=pl.lit(None, pl.Datetime("us")))
        return [u for u, _ in iter_user_requests(timed)]

    # one chunk: most requests first, plan order among equals, every user once
    assert users(longest_users_first(batch, 10)) == ["b", "d", "c", "a", "e"]
    # chunks of two users of plan order: (a, b), (c, d), (e)
    assert users(longest_users_first(batch, 2)) == ["b", "a", "d", "c", "e"]
    assert users(longest_users_first(batch, 1)) == list(counts)
    # at most four users a chunk, as even as can be: (a, b, c), (d, e), not (a, b, c, d), (e)
    assert users(longest_users_first(batch, 4)) == ["b", "c", "a", "d", "e"]
    assert chunk_reach(batch, 4, {u: i for i, u in enumerate(counts)}) == {"a": 2, "b": 2, "c": 2, "d": 4, "e": 4}
    for user, group in longest_users_first(batch, 2).group_by("user_id", maintain_order=True):
        assert group["seq"].to_list() == list(range(counts[str(user[0])]))
    assert longest_users_first(batch.clear(), 2).is_empty()


def test_a_chunk_is_reserved_by_its_highest_plan_index() -> None:
    batch = pl.DataFrame({"user_id": ["a", "a", "b", "c", "d", "e"]})
    index = {"a": 3, "b": 7, "c": 8, "d": 12, "e": 13}
    assert chunk_reach(batch, 2, index) == {"a": 7, "b": 7, "c": 12, "d": 12, "e": 13}
