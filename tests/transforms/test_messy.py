"""Messy-data rules: each test writes a small file with exactly one trait and checks its rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from transforms.mapping import map_events
from transforms.presets import PRESETS, resolve_mapping
from transforms.schema import InputError
from transforms.spec import mapping_from_dict
from transforms.validate import classify, order_log

from .test_presets import frames, ordered, scan, state_of

HEADER = "user_id,flow_slug,step_id,action,created_at\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(tmp_path: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    return write(tmp_path, name, "".join(json.dumps(r) + "\n" for r in rows))


def run(path: Path, preset: str, doc: dict[str, Any] | None = None) -> pl.DataFrame:
    flows, steps = frames()
    events = map_events(scan(path), resolve_mapping(preset, doc), path.name, steps=steps)
    return classify(events, flows, steps).collect()


# ---------------------------------------------------------------- 1. duplicates


def test_duplicates_share_the_source_event_id(tmp_path: Path) -> None:
    ev: dict[str, Any] = {
        "event": "flow_started",
        "properties": {"time": 1709283600, "distinct_id": "u1", "$insert_id": "a1"},
    }
    ev["properties"]["flow_id"] = "flow_welcome_tour"
    later = json.loads(json.dumps(ev))
    later["properties"]["time"] += 5  # a re-sent copy with a later client time: same event
    other = json.loads(json.dumps(ev))
    other["properties"]["$insert_id"] = "a2"
    out = ordered(run(jsonl(tmp_path, "mp.jsonl", [ev, later, other]), "mixpanel"))
    assert out.get_column("event_id").to_list() == ["a1", "a2", "a1"]
    assert out.get_column("duplicate").to_list() == [False, False, True]


def test_duplicates_without_event_id_use_the_natural_key(tmp_path: Path) -> None:
    row = "u1,flow_welcome_tour,welcome,STARTED_STEP,2024-03-01T10:00:00Z\n"
    out = ordered(run(write(tmp_path, "e.csv", HEADER + row + row), "long"))
    assert out.get_column("duplicate").to_list() == [False, True]


def test_users_whose_ids_share_a_hash_still_get_one_run_each(tmp_path: Path) -> None:
    """The log sorts users by a hash of their id; ids that share one are sorted by the ids instead."""
    rows = [
        "u2,flow_welcome_tour,welcome,STARTED_STEP,2024-03-01T10:00:01Z",
        "u1,flow_welcome_tour,welcome,STARTED_STEP,2024-03-01T10:00:02Z",
        "u2,flow_welcome_tour,welcome,COMPLETED_STEP,2024-03-01T10:00:03Z",
        "u1,flow_onboarding,connect-data,STARTED_STEP,2024-03-01T10:00:00Z",
        "u1,flow_welcome_tour,welcome,STARTED_STEP,2024-03-01T10:00:02Z",
    ]
    events = run(write(tmp_path, "e.csv", HEADER + "\n".join(rows) + "\n"), "long")
    valid = events.filter(pl.col("status") == "valid").with_columns(pl.col("source_row").alias("row_key"))
    normal = order_log(valid, 8)
    collided = order_log(valid, 8, user_hash=lambda _: pl.lit(7, pl.UInt64))
    for log in (normal, collided):
        runs = log.group_by("uf").agg(pl.col("user_id").n_unique(), pl.col("fl").n_unique(), pl.len())
        assert runs.height == 3
        assert runs["user_id"].max() == 1
        assert runs["fl"].max() == 1
        assert log.get_column("duplicate").to_list().count(True) == 1
    key = ["user_id", "fl", "ts", "row_key"]
    assert normal.drop("uf").sort(key).equals(collided.drop("uf").sort(key))
    assert collided["user_id"].to_list() == sorted(collided["user_id"].to_list())


def test_segment_retries_share_message_id(tmp_path: Path) -> None:
    base = {"type": "track", "event": "Flow Started", "userId": "u1", "messageId": "m-1"}
    rows = [
        {**base, "properties": {"flow_id": "flow_announcement"}, "timestamp": "2024-03-01T10:00:00Z"},
        {**base, "properties": {"flow_id": "flow_announcement"}, "timestamp": "2024-03-01T10:00:03Z"},
    ]
    out = ordered(run(jsonl(tmp_path, "s.jsonl", rows), "segment"))
    assert out.get_column("duplicate").sum() == 1


def test_a_row_that_fans_out_keeps_distinct_event_ids(tmp_path: Path) -> None:
    text = (
        "visitor_id,guide_id,guide_step_id,type,timestamp,event_id\n"
        "v1,flow_welcome_tour,welcome,guideSeen,1709283600000,ev9\n"
    )
    out = run(write(tmp_path, "p.csv", text), "pendo")
    assert out.height == 2
    assert out.get_column("source_row").to_list() == [1, 1]
    assert out.get_column("event_id").n_unique() == 2
    assert not ordered(out).get_column("duplicate").any()


# ---------------------------------------------------------------- 2. out-of-order and late rows


def test_out_of_order_rows_give_the_state_of_the_sorted_log(tmp_path: Path) -> None:
    rows = [
        "u1,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z",
        "u1,flow_welcome_tour,welcome,STARTED_STEP,2024-03-01T10:01:00Z",
        "u1,flow_welcome_tour,welcome,COMPLETED_STEP,2024-03-01T10:02:00Z",
        "u1,flow_welcome_tour,sidebar,STARTED_STEP,2024-03-01T10:03:00Z",
    ]
    in_order = state_of(run(write(tmp_path, "a.csv", HEADER + "\n".join(rows) + "\n"), "long"))
    shuffled = [rows[3], rows[1], rows[0], rows[2]]
    late = state_of(run(write(tmp_path, "b.csv", HEADER + "\n".join(shuffled) + "\n"), "long"))
    assert in_order == late
    assert late["u1"]["flow_welcome_tour"]["current_step_index"] == 1


# ---------------------------------------------------------------- 3. timestamps


def ts_of(events: pl.DataFrame) -> list[datetime | None]:
    return events.sort("source_row").get_column("ts").to_list()


def test_mixed_iso_and_epoch_ms_in_one_column(tmp_path: Path) -> None:
    text = (
        "user_id,flowId,stepId,name,timestamp\n"
        "u1,flow_welcome_tour,,appcues:flow_started,2024-03-01T10:00:00.250Z\n"
        "u1,flow_welcome_tour,,flow_started,1709287200250\n"
    )
    got = ts_of(run(write(tmp_path, "a.csv", text), "appcues"))
    assert got == [datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)] * 2


def test_epoch_seconds_and_microsecond_strings(tmp_path: Path) -> None:
    mp: dict[str, Any] = {"event": "flow_started", "properties": {"time": 1709287200, "distinct_id": "u1"}}
    mp["properties"]["flow_id"] = "flow_welcome_tour"
    assert ts_of(run(jsonl(tmp_path, "m.jsonl", [mp]), "mixpanel")) == [datetime(2024, 3, 1, 10, tzinfo=UTC)]
    amp = {
        "event_type": "Flow Started",
        "user_id": "u1",
        "event_time": "2024-03-01 10:00:00.123456",
        "event_properties": {"flow_id": "flow_welcome_tour"},
    }
    got = ts_of(run(jsonl(tmp_path, "a.jsonl", [amp]), "amplitude"))
    assert got == [datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)]


def test_formats_after_iso_read_the_text_as_it_was(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_welcome_tour,,STARTED_FLOW,02/01/2024 03:04\n"
    doc = {"extra_time_formats": ["%d/%m/%Y %H:%M"], "timezone": "UTC"}
    assert ts_of(run(write(tmp_path, "a.csv", text), "long", doc)) == [datetime(2024, 1, 2, 3, 4, tzinfo=UTC)]


def test_a_naive_reading_without_a_zone_leaves_the_row_to_later_formats(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_welcome_tour,,STARTED_FLOW,2024-01-02T03:04:05Z\n"
    doc = {"time_format": "%Y-%m-%dT%H:%M:%SZ", "extra_time_formats": ["iso"]}
    out = run(write(tmp_path, "a.csv", text), "long", doc)
    assert ts_of(out) == [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)]
    assert out.get_column("status").to_list() == ["valid"]


def test_an_event_name_in_the_data_is_never_split(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_welcome_tour,welcome,STARTED_STEP+COMPLETED_STEP,2024-01-01T00:00:00Z\n"
    out = run(write(tmp_path, "a.csv", text), "long", {"action_map": {"shown": "STARTED_FLOW+STARTED_STEP"}})
    assert out.height == 1
    assert out.get_column("reason").item() == "unknown action 'STARTED_STEP+COMPLETED_STEP'"


def test_naive_local_time_without_a_declared_zone_is_an_error(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_welcome_tour,,STARTED_FLOW,2024-03-01 10:00:00\n"
    out = run(write(tmp_path, "n.csv", text), "long")
    reason = out.get_column("map_reason").item()
    assert reason.startswith("time has no zone")
    assert out.get_column("status").item() == "quarantined"
    assert out.get_column("ts_raw").item() == "2024-03-01 10:00:00"


def test_declared_zone_converts_local_times(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_welcome_tour,,STARTED_FLOW,2024-03-01 10:00:00\n"
    out = run(write(tmp_path, "n.csv", text), "long", {"timezone": "America/New_York"})
    assert ts_of(out) == [datetime(2024, 3, 1, 15, tzinfo=UTC)]
    assert out.get_column("map_reason").item() is None


def test_unparseable_and_missing_times_are_quarantined(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_welcome_tour,,STARTED_FLOW,last tuesday\nu1,flow_welcome_tour,,STARTED_FLOW,\n"
    out = run(write(tmp_path, "t.csv", text), "long").sort("source_row")
    assert out.get_column("reason").to_list() == ["unparseable time", "missing time"]


def test_a_numeric_time_column_is_epoch_time_in_the_unit_its_size_says(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "flow_slug": ["flow_welcome_tour"] * 3,
            "action": ["STARTED_FLOW"] * 3,
            "created_at": [1709287200, 1709287200_000, 1],
        }
    ).write_parquet(path)
    out = run(path, "long").sort("source_row")
    assert out.get_column("ts").to_list()[:2] == [datetime(2024, 3, 1, 10, tzinfo=UTC)] * 2
    assert out.get_column("status").to_list() == ["valid", "valid", "quarantined"]
    assert out.get_column("reason").to_list()[2].startswith("time before 2000-01-01")


# ---------------------------------------------------------------- 4. missing predecessors


def test_completion_without_start_is_kept_and_starts_the_flow(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_onboarding,invite-team,COMPLETED_STEP,2024-03-01T10:00:00Z\n"
    state = state_of(run(write(tmp_path, "c.csv", text), "long"))["u1"]["flow_onboarding"]
    assert state["started"]
    assert not state["completed"]
    assert state["steps"]["invite-team"] == {"started": True, "completed": True, "skipped": False}
    assert state["steps"]["connect-data"]["started"] is False
    assert state["current_step_index"] == 2


# ---------------------------------------------------------------- 5. steps by id, index, map


@pytest.mark.parametrize(
    ("step", "doc"),
    [
        ("sidebar", {}),
        ("1", {"step_by": "index0"}),
        ("2", {"step_by": "index1"}),
        ("Tour page 2", {"step_map": {"flow_welcome_tour": {"Tour page 2": "sidebar"}}}),
    ],
)
def test_step_references(tmp_path: Path, step: str, doc: dict[str, Any]) -> None:
    text = HEADER + f"u1,flow_welcome_tour,{step},COMPLETED_STEP,2024-03-01T10:00:00Z\n"
    out = run(write(tmp_path, "s.csv", text), "long", doc)
    assert out.get_column("status").item() == "valid"
    assert out.get_column("step_id").item() == "sidebar"
    assert out.get_column("step_index").item() == 1


def test_step_map_is_per_flow(tmp_path: Path) -> None:
    text = HEADER + (
        "u1,flow_welcome_tour,2,COMPLETED_STEP,2024-03-01T10:00:00Z\n"
        "u1,flow_onboarding,2,COMPLETED_STEP,2024-03-01T10:00:00Z\n"
    )
    doc = {"step_map": {"flow_welcome_tour": {"2": "sidebar"}, "flow_onboarding": {"2": "invite-team"}}}
    out = run(write(tmp_path, "s.csv", text), "long", doc).sort("source_row")
    assert out.get_column("step_id").to_list() == ["sidebar", "invite-team"]


def test_step_index_out_of_range_is_quarantined(tmp_path: Path) -> None:
    text = HEADER + "u1,flow_welcome_tour,7,COMPLETED_STEP,2024-03-01T10:00:00Z\n"
    out = run(write(tmp_path, "s.csv", text), "long", {"step_by": "index1"})
    assert out.get_column("reason").item() == "unknown step '7' in flow 'flow_welcome_tour'"


# ---------------------------------------------------------------- 6. users without a usable id


def test_segment_rejects_anonymous_rows_unless_the_mapping_allows_them(tmp_path: Path) -> None:
    row = {
        "type": "track",
        "event": "Flow Started",
        "anonymousId": "anon-7",
        "properties": {"flow_id": "flow_announcement"},
        "timestamp": "2024-03-01T10:00:00Z",
    }
    path = jsonl(tmp_path, "s.jsonl", [row, {**row, "userId": "u1"}])
    strict = run(path, "segment").sort("source_row")
    assert strict.get_column("reason").to_list() == ["missing user id", None]
    lenient = run(path, "segment", {"user": ["userId", "anonymousId"], "coalesce": ["user"]})
    assert sorted(lenient.get_column("user_id").to_list()) == ["anon-7", "u1"]


def test_mixpanel_device_ids_and_empty_ids_are_not_users(tmp_path: Path) -> None:
    def ev(distinct: str, **extra: str) -> dict[str, Any]:
        props = {"time": 1709287200, "distinct_id": distinct, "flow_id": "flow_announcement", **extra}
        return {"event": "flow_started", "properties": props}

    path = jsonl(tmp_path, "m.jsonl", [ev("$device:18c"), ev("  "), ev("$device:19d", **{"$user_id": "u5"})])
    out = run(path, "mixpanel").sort("source_row")
    # an anonymous id is quarantined under its own reason, and shown as it was (issue 12)
    assert out.get_column("user_id").to_list() == ["$device:18c", None, "u5"]
    assert out.get_column("status").to_list() == ["quarantined", "quarantined", "valid"]
    reasons = out.get_column("reason").to_list()
    assert reasons[0].startswith("anonymous user id (reject_users")
    assert reasons[1:] == ["missing user id", None]


# ---------------------------------------------------------------- 7. content that no longer exists


def test_unknown_flows_steps_and_archived_flows_are_quarantined(tmp_path: Path) -> None:
    text = HEADER + (
        "u1,flow_gone,,STARTED_FLOW,2024-03-01T10:00:00Z\n"
        "u1,flow_onboarding,old-step,COMPLETED_STEP,2024-03-01T10:00:00Z\n"
        "u1,flow_legacy_survey,,STARTED_FLOW,2024-03-01T10:00:00Z\n"
    )
    out = run(write(tmp_path, "g.csv", text), "long").sort("source_row")
    assert out.get_column("reason").to_list() == [
        "unknown flow 'flow_gone' (not in the catalog)",
        "unknown step 'old-step' in flow 'flow_onboarding'",
        "flow 'flow_legacy_survey' is ARCHIVED (only ACTIVE flows are written)",
    ]


def test_a_vendor_id_missing_from_the_flow_map_is_an_unknown_flow(tmp_path: Path) -> None:
    text = "visitor_id,guide_id,guide_step_id,type,timestamp\nv1,abc123,s1,guideDismissed,1709283600000\n"
    out = run(write(tmp_path, "p.csv", text), "pendo", {"flow_map": {"zzz": "flow_onboarding"}})
    assert out.get_column("reason").item() == "unknown flow 'abc123' (not in the catalog)"


# ---------------------------------------------------------------- 8. skip / dismiss / complete


def test_userflow_ending_after_completion_is_not_a_skip(tmp_path: Path) -> None:
    text = (
        "id,name,user_id,flow_id,flow_step_id,time\n"
        "1,flow_completed,u1,flow_announcement,reports-v2,2024-03-01T10:00:00Z\n"
        "2,flow_ended,u1,flow_announcement,reports-v2,2024-03-01T10:00:01Z\n"
        "3,flow_ended,u2,flow_announcement,reports-v2,2024-03-01T10:00:01Z\n"
    )
    out = run(write(tmp_path, "u.csv", text), "userflow")
    ended = out.filter(pl.col("raw_event") == "flow_ended").sort("user_id")
    assert ended.get_column("status").to_list() == ["dropped", "valid"]
    state = state_of(out)
    assert state["u1"]["flow_announcement"]["completed"]
    assert not state["u1"]["flow_announcement"]["skipped"]
    assert state["u2"]["flow_announcement"]["skipped"]


@pytest.mark.parametrize(
    ("declared", "completed", "skipped"), [("COMPLETED_FLOW", True, False), ("SKIPPED_FLOW", False, True)]
)
def test_a_conflated_status_means_what_the_mapping_declares(
    tmp_path: Path, declared: str, completed: bool, skipped: bool
) -> None:
    text = "user_id,tour,status,updated_at\nu1,flow_welcome_tour,closed,2024-03-01T10:00:00Z\n"
    doc = {"flow": ["tour"], "action": ["status"], "time": ["updated_at"], "action_map": {"closed": declared}}
    state = state_of(run(write(tmp_path, "t.csv", text), "long", doc))["u1"]["flow_welcome_tour"]
    assert (state["completed"], state["skipped"]) == (completed, skipped)


# ---------------------------------------------------------------- 9. aggregate-only exports


def test_aggregate_exports_are_refused_with_the_reason(tmp_path: Path) -> None:
    text = "flow,step,count,users\nflow_onboarding,connect-data,120,97\n"
    with pytest.raises(InputError, match="aggregate export") as err:
        run(write(tmp_path, "dash.csv", text), "long")
    assert err.value.file == "dash.csv"
    assert "cannot become per-user state" in str(err.value)


# ---------------------------------------------------------------- mapping errors


def test_missing_required_column_names_file_and_field(tmp_path: Path) -> None:
    text = "user_id,flow_slug,created_at\nu1,flow_onboarding,2024-03-01T10:00:00Z\n"
    with pytest.raises(InputError, match="missing column") as err:
        run(write(tmp_path, "x.csv", text), "long")
    assert (err.value.file, err.value.field) == ("x.csv", "action")


def test_mapping_files_are_validated() -> None:
    with pytest.raises(InputError, match="unknown key 'colour'"):
        mapping_from_dict({"colour": "red"})
    with pytest.raises(InputError, match="unknown actions: FINISHED"):
        mapping_from_dict({"action_map": {"done": "STARTED_FLOW+FINISHED"}})
    with pytest.raises(InputError, match="has no zone"):
        mapping_from_dict({"default_time": "2024-01-01T00:00:00"})
    with pytest.raises(InputError, match="wide rule 0 needs"):
        mapping_from_dict({"wide": [{"columns": "x"}]})
    m = mapping_from_dict({"action_map": {"seen": ["STARTED_FLOW", "STARTED_STEP"]}})
    assert m.action_map == {"seen": "STARTED_FLOW+STARTED_STEP"}


def test_a_mapping_overrides_only_what_it_names() -> None:
    m = resolve_mapping("pendo", {"flow_map": {"g": "flow_onboarding"}}, {"timezone": "UTC"})
    assert m.action_map == PRESETS["pendo"].action_map
    assert (m.flow_map, m.timezone, m.name) == ({"g": "flow_onboarding"}, "UTC", "pendo")
    with pytest.raises(InputError, match="unknown preset 'heap'"):
        resolve_mapping("heap")


def test_catalog_derivations_need_the_catalog(tmp_path: Path) -> None:
    text = "visitor_id,guide_id,guide_step_id,type,timestamp\nv1,g,s,guideAdvanced,1709283600000\n"
    with pytest.raises(InputError, match="last_step_completes_flow"):
        map_events(scan(write(tmp_path, "p.csv", text)), PRESETS["pendo"], "p.csv")
