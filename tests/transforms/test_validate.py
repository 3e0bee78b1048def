"""transforms.validate: every event valid, dropped or quarantined with its reason; then the log order
and its duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from transforms.schema import DROP, EVENT_SCHEMA
from transforms.validate import (
    DROPPED,
    LATEST_SENDABLE,
    P_ACTION,
    P_DATA,
    P_DATA_LARGE,
    P_FLOW,
    P_FLOW_WITH_STEP,
    P_ID_LONG,
    P_INACTIVE,
    P_MAP,
    P_NEEDS_STEP,
    P_TIME_EARLY,
    P_TIME_LATE,
    P_UNKNOWN_ACTION,
    P_UNKNOWN_FLOW,
    P_UNKNOWN_STEP,
    P_USER,
    ROW_SPAN,
    VALID,
    Limits,
    catalog_frames,
    classify,
    order_log,
    row_key,
    whitespace_twins,
)

T = datetime(2024, 3, 1, 10, tzinfo=UTC)
STEPS = [
    {"flow_slug": "f", "step_id": "a", "step_index": 0, "step_count": 2},
    {"flow_slug": "f", "step_id": "b", "step_index": 1, "step_count": 2},
]
LIMITS = Limits.window(datetime(2000, 1, 1, tzinfo=UTC), timedelta(days=1), now=T)


def frame(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    base = {k: None for k in EVENT_SCHEMA} | {"source_file": "e.csv", "ts": T, "user_id": "u1", "flow_slug": "f"}
    return pl.DataFrame([base | {"source_row": i + 1} | r for i, r in enumerate(rows)], schema=EVENT_SCHEMA).lazy()


def test_catalog_frames() -> None:
    flows, steps = catalog_frames(STEPS, {"f": "ACTIVE", "old": "ARCHIVED"})
    assert flows.collect().rows() == [("f", "ACTIVE"), ("old", "ARCHIVED")]
    assert steps.collect().rows() == [("f", "a", 0, 2), ("f", "b", 1, 2)]


def test_every_check_in_order_with_its_words() -> None:
    rows: list[tuple[dict[str, Any], int, str | None]] = [
        ({"step_id": "a", "action": "STARTED_STEP"}, VALID, None),
        ({"action": DROP, "raw_event": "page_view"}, DROPPED, "non-state event 'page_view'"),
        ({"action": "STARTED_FLOW", "map_reason": "unparseable time", "ts": None}, P_MAP, "unparseable time"),
        (
            {"action": "STARTED_FLOW", "ts": datetime(1970, 1, 20, tzinfo=UTC)},
            P_TIME_EARLY,
            "time before 2000-01-01T00:00:00Z (earliest_time): epoch seconds read as milliseconds (or ms as "
            "microseconds)? check time_format",
        ),
        (
            {"action": "STARTED_FLOW", "ts": datetime(2300, 1, 1, tzinfo=UTC)},
            P_TIME_LATE,
            "time more than 24h in the future (max_future): check the time column and time_format",
        ),
        ({"action": "STARTED_FLOW", "user_id": None}, P_USER, "missing user id"),
        ({"action": "STARTED_FLOW", "group_id": "g" * 513}, P_ID_LONG, "group id longer than 512 bytes"),
        ({"action": None}, P_ACTION, "missing action"),
        ({"action": "celebrated", "raw_event": "celebrated"}, P_UNKNOWN_ACTION, "unknown action 'celebrated'"),
        ({"action": "STARTED_FLOW", "flow_slug": None}, P_FLOW, "missing flow"),
        ({"action": "STARTED_FLOW", "flow_slug": "nope"}, P_UNKNOWN_FLOW, "unknown flow 'nope' (not in the catalog)"),
        (
            {"action": "STARTED_FLOW", "flow_slug": "old"},
            P_INACTIVE,
            "flow 'old' is ARCHIVED (only ACTIVE flows are written)",
        ),
        ({"action": "COMPLETED_STEP"}, P_NEEDS_STEP, "COMPLETED_STEP needs a step"),
        (
            {"action": "COMPLETED_FLOW", "step_id": "a"},
            P_FLOW_WITH_STEP,
            "COMPLETED_FLOW is a flow action but the row names step 'a'",
        ),
        ({"action": "COMPLETED_STEP", "step_id": "zz"}, P_UNKNOWN_STEP, "unknown step 'zz' in flow 'f'"),
        ({"action": "COMPLETED_STEP", "step_index": 5}, P_UNKNOWN_STEP, "unknown step '5' in flow 'f'"),
        ({"action": "COMPLETED_STEP", "step_index": 1}, VALID, None),
        ({"action": "STARTED_FLOW", "data": "[1]"}, P_DATA, "data is not a JSON object"),
        ({"action": "STARTED_FLOW", "data": '{"x": "' + "1" * 70_000 + '"}'}, P_DATA_LARGE, "data larger than 64 KiB"),
        ({"action": "STARTED_FLOW", "data": '{"ok": true}'}, VALID, None),
    ]
    flows, steps = catalog_frames(STEPS, {"f": "ACTIVE", "old": "ARCHIVED"})
    out = classify(frame([r for r, _, _ in rows]), flows, steps, LIMITS).collect()
    assert out.select("problem", "reason").rows() == [(p, words) for _, p, words in rows]
    status = {VALID: "valid", DROPPED: "dropped"}
    assert out.get_column("status").to_list() == [status.get(p, "quarantined") for _, p, _ in rows]
    # steps named by position come back as ids; an unknown step has none
    assert out.select("step_id", "step_index").rows()[14:17] == [(None, None), (None, 5), ("b", 1)]
    assert out.select("step_id", "step_index").row(0) == ("a", 0)


def test_the_time_window_stops_at_the_last_sendable_time() -> None:
    limits = Limits.window(datetime(2000, 1, 1, tzinfo=UTC), timedelta(days=3_000_000), now=T)
    assert limits.latest == LATEST_SENDABLE
    assert Limits.window(T, timedelta(hours=6), now=T).latest == T + timedelta(hours=6)


def test_ids_that_differ_only_by_whitespace_are_counted() -> None:
    assert whitespace_twins(pl.Series(["u1", " u1", "u1 ", "u2", " u3", "u4", "u4"])) == 3
    assert whitespace_twins(pl.Series(["u1", "u2"], dtype=pl.String)) == 0


def test_row_keys_name_a_row_across_files() -> None:
    assert pl.select(row_key(pl.lit(2, pl.Int64), pl.lit(7, pl.Int64))).item() == 2 * ROW_SPAN + 7


LOG_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "fl": pl.UInt32(),
    "gs": pl.UInt32(),
    "act": pl.UInt8(),
    "ts": pl.Datetime("us", "UTC"),
    "row_key": pl.Int64(),
    "event_id": pl.String(),
}
S = timedelta(seconds=1)
LOG_ROWS = [
    ("u1", 0, 0, 0, T + S, 5, "e1"),
    ("u1", 0, 0, 0, T, 1, None),
    ("u2", 0, 0, 0, T, 2, "e1"),
    ("u1", 0, 0, 0, T, 3, None),
    ("u1", 1, None, 4, T, 4, "e1"),
    ("u1", 0, 1, 1, T, 6, None),
]


def by_number(user: pl.Expr) -> pl.Expr:
    """A user hash that sorts u1 before u2, clear of the flow code's low bits."""
    return user.str.strip_prefix("u").cast(pl.UInt64) * 1024


def test_the_log_is_sorted_by_user_flow_time_and_row_and_marks_duplicates() -> None:
    log = order_log(pl.DataFrame(LOG_ROWS, schema=LOG_SCHEMA, orient="row"), 2, by_number)
    assert log.select("user_id", "fl", "row_key", "uf", "duplicate").rows() == [
        ("u1", 0, 1, 0, False),
        # the same user-flow, time, step and action with no event id: a repeat
        ("u1", 0, 3, 0, True),
        ("u1", 0, 6, 0, False),
        ("u1", 0, 5, 0, False),
        # the same user's event id again, in another flow: the first in the log wins
        ("u1", 1, 4, 1, True),
        # the same event id on another user is another event
        ("u2", 0, 2, 2, False),
    ]


def test_a_state_export_keeps_only_each_user_flows_latest_row() -> None:
    log = order_log(pl.DataFrame(LOG_ROWS, schema=LOG_SCHEMA, orient="row"), 2, by_number, latest_row_only=True)
    assert log.select("row_key", "duplicate").rows() == [
        (1, True),
        (3, True),
        (6, True),
        (5, False),
        (4, True),
        (2, False),
    ]
