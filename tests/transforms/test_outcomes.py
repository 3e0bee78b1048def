"""What a run's outcomes add up to: the verdict and its tallies, from hand-built frames."""

from __future__ import annotations

import polars as pl

from lifecycle.runfolder import OUTCOME_SCHEMA
from transforms.outcomes import latest_outcomes, per_flow, users_without_state, verdict

PLAN = pl.DataFrame(
    {
        "request_id": ["a|f|0", "a|f|1", "b|f|0", "c|f|0", "d|f|0"],
        "user_id": ["a", "a", "b", "c", "d"],
        "flow_slug": ["f"] * 5,
    }
)


def outcomes(rows: list[tuple[str, str, int, float]], error: str | None = None) -> pl.DataFrame:
    """(request_id, outcome, attempt, at)"""
    return pl.DataFrame(
        [
            {
                "request_id": r,
                "user_id": r.split("|")[0],
                "flow_slug": "f",
                "seq": int(r.split("|")[2]),
                "outcome": o,
                "attempt": n,
                "at": at,
                "ok": o != "failed",
                "error_class": error if o in ("failed", "rejected") else None,
                "message": "boom" if o in ("failed", "rejected") else None,
            }
            for r, o, n, at in rows
        ],
        schema=OUTCOME_SCHEMA,
    )


def test_the_latest_outcome_of_each_request_counts() -> None:
    log = outcomes([("a|f|0", "failed", 1, 1.0), ("a|f|0", "sent", 2, 0.5), ("b|f|0", "sent", 1, 2.0)])
    got = latest_outcomes(log).select("request_id", "outcome").sort("request_id").rows()
    assert got == [("a|f|0", "sent"), ("b|f|0", "sent")]


def test_verdict_sorts_users_into_matching_differing_and_unfinished() -> None:
    latest = latest_outcomes(
        outcomes(
            [
                ("a|f|0", "sent", 1, 1.0),
                ("a|f|1", "sent", 1, 1.1),
                ("b|f|0", "rejected", 1, 1.2),
                ("c|f|0", "sent", 1, 1.3),
            ],
            error="RejectedError",
        )
    )
    # c landed but differs (unexplained: its requests all took effect); b was rejected (explained);
    # d has no outcome at all: a stop came first
    mismatches = pl.DataFrame({"user_id": ["b", "c"], "flow_slug": ["f", "f"], "field": ["completed", "completed"]})
    v = verdict(PLAN, latest, mismatches, PLAN["user_id"])
    assert v.outcomes == {"rejected": 1, "sent": 3}
    assert v.failed_users == 1
    assert v.failure_reasons == {"RejectedError: boom": 1}
    assert (v.mismatches, v.unexplained_mismatches, v.mismatched_users) == (2, 1, 2)
    assert v.users == {"users_sent": 2, "users_not_reached": 1, "users_differing": 2, "users_matching": 1}
    assert v.failed(failure_limit=5)  # an unexplained mismatch fails the run whatever the limit
    fine = verdict(PLAN, latest, mismatches.filter(pl.col("user_id") == "b"), PLAN["user_id"])
    assert not fine.failed(failure_limit=1)
    assert fine.failed(failure_limit=0)


def test_users_whose_requests_took_effect_but_have_no_state_are_read_back() -> None:
    log = outcomes([("a|f|0", "sent", 1, 1.0), ("b|f|0", "resolved_applied", 1, 1.0), ("c|f|0", "failed", 1, 1.0)])
    assert users_without_state(log, pl.DataFrame({"user_id": ["a"]})) == ["b"]


def test_per_flow_counts_users_states_and_requests() -> None:
    expected = pl.DataFrame(
        {"user_id": ["a", "b"], "flow_slug": ["f", "f"], "started": [True, True], "completed": [True, False]}
    ).with_columns(pl.lit(False).alias("skipped"))
    assert per_flow(PLAN, expected) == [
        {"flow_slug": "f", "users": 2, "started": 2, "completed": 1, "skipped": 0, "requests": 5}
    ]


def test_most_rows_quarantined_is_warned_about_with_the_commonest_reason() -> None:
    from transforms.quarantine import mostly_quarantined

    counts = {"rows_in": 97, "rows_quarantined": 68}
    warning = mostly_quarantined(counts, {"unknown action 'flow_step_seen'": 45, "unknown action 'x'": 23})
    assert warning is not None
    assert warning.startswith("68 of 97 rows (70%) were quarantined, most as \"unknown action 'flow_step_seen'\"")
    assert "frigade-migrate inspect" in warning
    assert mostly_quarantined({"rows_in": 10, "rows_quarantined": 5}, {"r": 5}) is None
    assert mostly_quarantined({"rows_in": 0, "rows_quarantined": 0}, {}) is None


def test_failure_reasons_are_whole_and_name_no_missing_error_class() -> None:
    """A failure without an error class reads as its message alone (not 'None: ...'), and no reason
    is cut short; the report prints each whole in one cell."""
    from lifecycle.report import render

    long_message = "the server said: " + "flowSlug must be one of the catalog's active flows | " * 5
    log = outcomes([("a|f|0", "rejected", 1, 1.0)], error=None).with_columns(pl.lit(long_message).alias("message"))
    log = pl.concat([log, outcomes([("b|f|0", "failed", 1, 1.0)], error="ServerError")])
    none = pl.DataFrame(schema={"user_id": pl.String, "flow_slug": pl.String, "field": pl.String})
    judged = verdict(PLAN, latest_outcomes(log), none, pl.Series(["a", "b"]))
    assert judged.failure_reasons == {long_message: 1, "ServerError: boom": 1}
    md = render({"failure_reasons": judged.failure_reasons})
    row = next(line for line in md.splitlines() if line.startswith("| the server said"))
    assert row == "| " + long_message.strip().replace("|", "\\|") + " | 1 |"
    assert "None:" not in md
