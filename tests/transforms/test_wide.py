"""transforms.wide: a wide table's columns (one row per user) unpivoted into events by ``wide`` rules."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from transforms.schema import EVENT_SCHEMA, InputError
from transforms.spec import SourceMapping, WideRule
from transforms.wide import match_columns, wide_events

DEFAULT = datetime(2024, 4, 1, tzinfo=UTC)
DEFAULT_TEXT = "2024-04-01T00:00:00+00:00"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def events(frame: pl.DataFrame, mapping: SourceMapping) -> list[tuple[object, ...]]:
    out = wide_events(frame.lazy(), frame.schema, mapping, "w.csv").collect()
    assert out.columns == [*EVENT_SCHEMA, "__seq"]
    # one row in, several events out: ordered here by rule, then row, then flow (the unpivot's own
    # order is not part of the contract)
    return out.sort("__seq", "source_row", "flow_slug").rows()


MIXED = pl.DataFrame(
    {
        "user_id": ["u1", " u2 ", "u3", None],
        "onboarding_done": ["true", "no", " X ", "1"],
        "onboarding_done_at": ["2024-03-01T10:00:00Z", None, "", "2024-03-02T00:00:00Z"],
        "tour_step_welcome": [None, "2024-03-01T11:00:00Z", "bad", None],
        "flows_seen": ["a;b", '["c","d"]', None, "{e}"],
        "note": ["x", "y", "z", "w"],
    }
)
MIXED_RULES = (
    WideRule(r"^(?P<flow>\w+)_done$", "COMPLETED_FLOW"),
    WideRule(r"^tour_step_(?P<step>\w+)$", "STARTED_STEP", value="time"),
    WideRule(r"^flows_seen$", "STARTED_FLOW", value="list", time=None),
)


def test_matched_columns_their_ids_and_time_columns() -> None:
    mapping = SourceMapping(flow=(), required=("user",), wide=MIXED_RULES)
    got = [(w.column, w.rule.action, w.flow, w.step, w.time_column) for w in match_columns(MIXED.schema, mapping)]
    assert got == [
        ("onboarding_done", "COMPLETED_FLOW", "onboarding", None, "onboarding_done_at"),
        ("tour_step_welcome", "STARTED_STEP", None, "welcome", None),
        ("flows_seen", "STARTED_FLOW", None, None, None),
    ]


def test_the_mappings_id_columns_are_never_events() -> None:
    frame = pl.DataFrame({"user_done": ["true"], "flow_done": ["true"], "x_done": ["true"]})
    mapping = SourceMapping(user=("user_done",), flow=("flow_done",), wide=(WideRule("_done$", "COMPLETED_FLOW"),))
    assert [w.column for w in match_columns(frame.schema, mapping)] == ["x_done"]


def test_flags_times_and_lists_become_one_event_each() -> None:
    mapping = SourceMapping(flow=(), required=("user",), default_time="2024-04-01T00:00:00Z", wide=MIXED_RULES)
    got = events(MIXED, mapping)
    assert {(r[0], r[3], r[6], r[11], r[12]) for r in got} == {("w.csv", None, None, None, None)}
    flag, step, seen = "onboarding_done", "tour_step_welcome", "flows_seen"
    assert [(r[1], r[2], r[4], r[5], r[7], r[8], r[14]) for r in got] == [
        (1, "u1", "onboarding", None, "COMPLETED_FLOW", flag, 0),
        (3, "u3", "onboarding", None, "COMPLETED_FLOW", flag, 0),
        # no user id: the event goes on, for validation to quarantine
        (4, None, "onboarding", None, "COMPLETED_FLOW", flag, 0),
        (2, " u2 ", None, "welcome", "STARTED_STEP", step, 1),
        (3, "u3", None, "welcome", "STARTED_STEP", step, 1),
        (1, "u1", "a", None, "STARTED_FLOW", seen, 2),
        (1, "u1", "b", None, "STARTED_FLOW", seen, 2),
        (2, " u2 ", "c", None, "STARTED_FLOW", seen, 2),
        (2, " u2 ", "d", None, "STARTED_FLOW", seen, 2),
        (4, None, "e", None, "STARTED_FLOW", seen, 2),
    ]
    assert [r[9:11] + r[13:14] for r in got] == [
        (at(2024, 3, 1, 10), "2024-03-01T10:00:00Z", None),
        # " X " is set; its time column is empty, so the declared default_time stands in
        (DEFAULT, DEFAULT_TEXT, None),
        (at(2024, 3, 2), "2024-03-02T00:00:00Z", None),
        (at(2024, 3, 1, 11), "2024-03-01T11:00:00Z", None),
        # a time column's own time is the event's: no default for an unreadable one
        (None, "bad", "unparseable time"),
        *[(DEFAULT, DEFAULT_TEXT, None)] * 5,
    ]


def test_typed_flags_list_columns_and_step_lists_of_a_constant_flow() -> None:
    frame = pl.DataFrame(
        {
            "id": ["u1", "u2"],
            "started": [True, None],
            "finished": [0, 2],
            "steps": [["s1", " ", "s2"], []],
            "skips": ["s3|s4", "s5"],
        }
    )
    mapping = SourceMapping(
        user=("id",),
        flow_constant="f",
        default_time="2024-04-01T00:00:00Z",
        wide=(
            WideRule("^started$", "STARTED_FLOW", time=None),
            WideRule("^finished$", "COMPLETED_FLOW", time=None),
            WideRule("^steps$", "COMPLETED_STEP", value="list", list_of="step", time=None),
            WideRule("^skips$", "SKIPPED_STEP", value="list", list_of="step", separator="|", time=None),
        ),
    )
    got = [(r[1], r[2], r[4], r[5], r[7], r[14]) for r in events(frame, mapping)]
    assert got == [
        (1, "u1", "f", None, "STARTED_FLOW", 0),
        (2, "u2", "f", None, "COMPLETED_FLOW", 1),
        (1, "u1", "f", "s1", "COMPLETED_STEP", 2),
        (1, "u1", "f", "s2", "COMPLETED_STEP", 2),
        (1, "u1", "f", "s3", "SKIPPED_STEP", 3),
        (1, "u1", "f", "s4", "SKIPPED_STEP", 3),
        (2, "u2", "f", "s5", "SKIPPED_STEP", 3),
    ]


def test_what_a_wide_mapping_cannot_guess_is_an_error() -> None:
    frame = pl.DataFrame({"user_id": ["u1"], "onboarding_done": ["true"]})
    no_match = SourceMapping(flow=(), required=("user",), wide=(WideRule("^tour_", "STARTED_FLOW"),))
    with pytest.raises(InputError, match=r"^file w\.csv: no column matches the mapping's wide rules \('\^tour_'\)"):
        events(frame, no_match)
    no_time = SourceMapping(flow=(), required=("user",), wide=MIXED_RULES[:1])
    with pytest.raises(InputError, match=r"has no time column .* and the mapping declares no default_time"):
        events(frame, no_time)
    bad_template = SourceMapping(flow=(), wide=(WideRule("^(?P<flow>.+)_done$", "COMPLETED_FLOW", time="{step}_at"),))
    with pytest.raises(InputError, match=r"bad time template '\{step\}_at'"):
        match_columns(frame.schema, bad_template)
