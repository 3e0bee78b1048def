"""transforms.rows: one event per row of a long table, before derivations."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from transforms.rows import row_events
from transforms.schema import DROP, EVENT_SCHEMA, InputError
from transforms.spec import SourceMapping

ANONYMOUS = "anonymous user id (reject_users: the source marks it as a visitor who never signed in)"


def events(frame: pl.DataFrame, mapping: SourceMapping, name: str = "e.csv") -> list[tuple[object, ...]]:
    out = row_events(frame.lazy(), frame.schema, mapping, name).collect()
    assert out.schema == pl.Schema(EVENT_SCHEMA)
    return out.rows()


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_split_event_names_epoch_times_record_types_and_anonymous_users() -> None:
    frame = pl.DataFrame(
        {
            "user_id": [" u1", "u2", "", "$device:9"],
            "event": ["flow:101:started", "step:101:completed", "flow:101:started", "flow:101:started"],
            "step": [None, "2", None, None],
            "ts": ["1709287200000", "1709287201000", "1709287202000", "x"],
            "type": ["track", "track", "identify", "track"],
        }
    )
    mapping = SourceMapping(
        action=("event",),
        time=("ts",),
        time_format="epoch_ms",
        event_pattern=r"^(?P<entity>\w+):(?P<flow>\d+):(?P<event>\w+)$",
        entity_action_map={"flow": {"started": "STARTED_FLOW"}, "step": {"completed": "COMPLETED_STEP"}},
        flow_map={"101": "flow_a"},
        step_by="index1",
        reject_users=("$device:*",),
        record_type=("type",),
        record_types=("track",),
    )
    got = events(frame, mapping)
    assert {(r[0], r[3], r[4], r[11], r[12]) for r in got} == {("e.csv", None, "flow_a", None, None)}
    assert [r[1:3] + r[5:9] for r in got] == [
        (1, " u1", None, None, "STARTED_FLOW", "flow:101:started"),
        (2, "u2", "2", 1, "COMPLETED_STEP", "step:101:completed"),
        # not a record type that carries events: dropped as non-state, whatever its name says
        (3, None, None, None, DROP, "flow:101:started"),
        (4, "$device:9", None, None, "STARTED_FLOW", "flow:101:started"),
    ]
    assert [r[9:11] + r[13:] for r in got] == [
        (at(2024, 3, 1, 10), "1709287200000", None),
        (at(2024, 3, 1, 10, 0, 1), "1709287201000", None),
        (at(2024, 3, 1, 10, 0, 2), "1709287202000", None),
        # the id stays in the row; the reason is one for every such row, and it wins over the time's
        (None, "x", ANONYMOUS),
    ]


def test_coalesced_users_constants_a_default_time_data_and_event_ids() -> None:
    frame = pl.DataFrame(
        {
            "userId": [None, "u2"],
            "anonymousId": ["anon1", "anon2"],
            "done_at": ["2024-03-01T10:00:00Z", ""],
            "messageId": ["m1", " m2 "],
            "props": ['{"x": 1}', None],
        }
    )
    mapping = SourceMapping(
        user=("userId", "anonymousId"),
        coalesce=("user",),
        flow_constant="flow_a",
        action_constant="COMPLETED_FLOW",
        time=("done_at",),
        default_time="2024-04-01T00:00:00Z",
        data=("props",),
        event_id=("messageId",),
    )
    done = ("flow_a", None, None, "COMPLETED_FLOW", "COMPLETED_FLOW")
    assert events(frame, mapping, "c.csv") == [
        ("c.csv", 1, "anon1", None, *done, at(2024, 3, 1, 10), "2024-03-01T10:00:00Z", '{"x": 1}', "m1", None),
        ("c.csv", 2, "u2", None, *done, at(2024, 4, 1), "2024-04-01T00:00:00+00:00", None, "m2", None),
    ]


def test_prefixes_are_stripped_longest_first_and_unknown_names_kept_for_quarantine() -> None:
    """An unknown name goes on without its prefix (validation quarantines it, naming ``raw_event``)."""
    frame = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u1"],
            "flow_slug": ["f", "f", "f"],
            "step_id": ["  s1 ", None, None],
            "action": ["app_step_STARTED_STEP", "app_COMPLETED_FLOW", "app_celebrated"],
            "created_at": ["2024-03-01T10:00:00Z"] * 3,
        }
    )
    mapping = SourceMapping(strip_prefixes=("app_", "app_step_"))
    got = [(r[5], r[7], r[8]) for r in events(frame, mapping)]
    assert got == [
        ("s1", "STARTED_STEP", "app_step_STARTED_STEP"),
        (None, "COMPLETED_FLOW", "app_COMPLETED_FLOW"),
        (None, "celebrated", "app_celebrated"),
    ]


def test_missing_required_columns_are_named() -> None:
    frame = pl.DataFrame({"user_id": ["u1"], "flow_slug": ["f"], "action": ["STARTED_FLOW"]})
    with pytest.raises(InputError, match=r"^file g\.csv, field 'created_at': missing column: none of 'created_at'"):
        events(frame, SourceMapping(), "g.csv")
    timed = frame.with_columns(pl.lit("2024-03-01T10:00:00Z").alias("time"))
    with pytest.raises(InputError, match=r"^file g\.csv, field 'step_id': missing column"):
        events(timed, SourceMapping(required=("user", "flow", "action", "time", "step")), "g.csv")
    assert events(frame, SourceMapping(default_time="2024-03-01T00:00:00Z"))[0][9] == at(2024, 3, 1)
