"""transforms.source: expressions over an export's own columns, as a mapping names them."""

from __future__ import annotations

import polars as pl
import pytest

from transforms.schema import DROP, InputError
from transforms.source import (
    action_expr,
    column_exprs,
    flow_expr,
    glob_match,
    glob_regex,
    pattern_groups,
    refuse_aggregates,
    step_columns,
)
from transforms.spec import SourceMapping

USERPILOT = r"^(?P<entity>\w+):(?P<flow>\d+):(?P<event>\w+)$"


def test_glob_patterns_as_one_regular_expression() -> None:
    assert glob_regex(["$device:*", "a?c", "x.y"]) == r"^(?:\$device:.*|a.c|x\.y)$"
    assert glob_regex([]) is None


def test_glob_match_literal_shapes_and_other_globs_alike() -> None:
    names = ["$device:1", "abc", "x.y", "guide_seen", "my_guide", "pre_guide_post", "a-c", None, "zzz", "xzy"]
    hit = glob_match(pl.col("n"), ["$device:*", "x.y", "*guide", "*_guide_*", "a?c"])
    assert hit is not None
    got = pl.DataFrame({"n": names}).select(hit).to_series().to_list()
    assert got == [True, True, True, False, True, True, True, False, False, False]
    assert glob_match(pl.col("n"), []) is None


def test_event_names_become_actions_through_prefixes_entity_maps_and_non_state_patterns() -> None:
    mapping = SourceMapping(
        strip_prefixes=("ev_", "ev_app_"),
        action_map={"start": "STARTED_FLOW", "done": "COMPLETED_FLOW+COMPLETED_STEP"},
        entity_action_map={"step": {"start": "STARTED_STEP"}},
        drop_events=("page*", "start"),
    )
    frame = pl.DataFrame(
        {
            "ev": ["ev_start", "ev_app_start", "start", "ev_done", "COMPLETED_FLOW", "pageview", "mystery", None],
            "ent": ["flow", "step", "step", None, None, None, None, None],
        }
    )
    got = frame.select(action_expr(pl.col("ev"), mapping, pl.col("ent"))).to_series().to_list()
    # explicit maps win over drop_events ("start"); an unknown name stays as it is, for quarantine
    want = ["STARTED_FLOW", "STARTED_STEP", "STARTED_STEP", "COMPLETED_FLOW+COMPLETED_STEP", "COMPLETED_FLOW"]
    assert got == [*want, DROP, "mystery", None]


def test_unmapped_names_can_be_dropped_instead() -> None:
    mapping = SourceMapping(unmapped="drop")
    frame = pl.DataFrame({"ev": ["COMPLETED_FLOW", "mystery", None]})
    assert frame.select(action_expr(pl.col("ev"), mapping)).to_series().to_list() == ["COMPLETED_FLOW", DROP, None]


def test_drop_patterns_also_match_the_whole_name_of_a_split_event() -> None:
    mapping = SourceMapping(drop_events=("checklist:*",), action_map={"completed": "COMPLETED_FLOW"})
    frame = pl.DataFrame(
        {"event": ["completed", "shown", "shown"], "full": ["flow:1:completed", "checklist:2:shown", "x"]}
    )
    got = frame.select(action_expr(pl.col("event"), mapping, None, pl.col("full"))).to_series().to_list()
    assert got == ["COMPLETED_FLOW", DROP, "shown"]


def test_column_text_keeps_user_ids_as_written_unless_trimmed() -> None:
    frame = pl.DataFrame({"user_id": ["  u1 ", "", "u2"], "userId": ["a", "b", "c"], "flow": [" F ", "X", None]})
    cols = column_exprs(frame.schema, SourceMapping(), "e.csv", ("user", "flow", "data"))
    assert cols["data"] is None
    user, flow = cols["user"], cols["flow"]
    assert user is not None
    assert flow is not None
    assert frame.select(user.alias("u"), flow.alias("f")).rows() == [("  u1 ", "F"), (None, "X"), ("u2", None)]
    trimmed = column_exprs(frame.schema, SourceMapping(trim_user_ids=True), "e.csv", ("user",))["user"]
    assert trimmed is not None
    assert frame.select(trimmed).to_series().to_list() == ["u1", None, "u2"]


def test_a_missing_required_column_names_the_flag_and_the_closest_column() -> None:
    schema = pl.Schema({"uid": pl.String, "flow_slug": pl.String})
    with pytest.raises(InputError) as exc:
        column_exprs(schema, SourceMapping(), "e.csv", ("user", "flow"))
    assert str(exc.value) == (
        "file e.csv, field 'user_id': missing column: none of 'user_id', 'userId' is in the file (columns: uid, "
        "flow_slug) (name the column that holds the user with --user-col uid, or `user: uid` in a --mapping file)"
    )
    with pytest.raises(InputError, match="with --action-col COLUMN, or `action: COLUMN`"):
        column_exprs(schema, SourceMapping(user=("uid",)), "e.csv", ("action",))


def test_constants_and_event_pattern_groups_stand_in_for_required_columns() -> None:
    schema = pl.Schema({"user_id": pl.String, "name": pl.String})
    constant = SourceMapping(flow_constant="f", action_constant="COMPLETED_FLOW")
    assert column_exprs(schema, constant, "e.csv", ("flow", "action")) == {"flow": None, "action": None}
    split = SourceMapping(action=("name",), event_pattern=USERPILOT)
    assert column_exprs(schema, split, "e.csv", ("flow",)) == {"flow": None}
    assert pattern_groups(split) == {"entity", "flow", "event"}
    assert pattern_groups(SourceMapping()) == set()


def test_flow_ids_through_the_constant_or_the_flow_map() -> None:
    frame = pl.DataFrame({"f": ["F", "X", None]})
    mapped = SourceMapping(flow_map={"F": "flow_a"})
    got = frame.select(
        flow_expr(pl.col("f"), mapped).alias("mapped"),
        flow_expr(pl.col("f"), SourceMapping(flow_constant="k")).alias("constant"),
        flow_expr(None, SourceMapping()).alias("none"),
    )
    assert got.rows() == [("flow_a", "k", None), ("X", "k", None), (None, "k", None)]


def test_steps_by_id_or_position_and_through_a_per_flow_step_map() -> None:
    frame = pl.DataFrame({"flow": ["a", "b", "a", "a"], "step": ["2", "2", "x", "3.0"]})
    by_id = SourceMapping(step_map={"a": {"2": "two"}})
    index0, index1 = SourceMapping(step_by="index0"), SourceMapping(step_by="index1")
    rows = [frame.select(step_columns(pl.col("step"), pl.col("flow"), m)).rows() for m in (by_id, index0, index1)]
    assert rows[0] == [("two", None), ("2", None), ("x", None), ("3.0", None)]
    assert rows[1] == [("2", 2), ("2", 2), ("x", None), ("3.0", 3)]
    assert rows[2] == [("2", 1), ("2", 1), ("x", None), ("3.0", 2)]


def test_aggregate_exports_are_refused_only_without_a_user_column() -> None:
    schema = pl.Schema({"flow": pl.String, "Users": pl.Int64, "completion_rate": pl.Float64, "title": pl.String})
    with pytest.raises(InputError, match=r"count columns 'Users', 'completion_rate' and no per-user id column"):
        refuse_aggregates(schema, SourceMapping(), "agg.csv")
    refuse_aggregates(pl.Schema({"user_id": pl.String, "count": pl.Int64}), SourceMapping(), "x.csv")
    refuse_aggregates(pl.Schema({"flow": pl.String}), SourceMapping(), "x.csv")
