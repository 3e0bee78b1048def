"""The generic derivations presets switch on, one by one, and the size rule (everything lazy)."""

from __future__ import annotations

import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from transforms.mapping import map_events
from transforms.presets import PRESETS, resolve_mapping
from transforms.schema import InputError
from transforms.spec import NOT_IN_DOCUMENTS, SourceMapping, mapping_from_dict

from .test_messy import run, write
from .test_presets import frames, state_of


def actions(events: pl.DataFrame) -> list[tuple[int, str, str | None]]:
    rows = events.sort("source_row", "ts").select("source_row", "action", "step_id").rows()
    return [(int(r), str(a), s) for r, a, s in rows]


def test_userpilot_names_split_into_entity_flow_step_and_status(tmp_path: Path) -> None:
    text = (
        "user_id,event_name,inserted_at\n"
        "u1,flow:77:SEEN,2024-03-01 10:00:00.000001\n"
        "u1,step:77:2:COMPLETED,2024-03-01 10:00:01.000001\n"
        "u1,checklist:77:DISMISSED,2024-03-01 10:00:02.000001\n"
        "u1,banner:5:SEEN,2024-03-01 10:00:03.000001\n"
        "u1,something odd,2024-03-01 10:00:04.000001\n"
    )
    out = run(
        write(tmp_path, "up.csv", text), "userpilot", {"flow_map": {"77": "flow_onboarding"}, "step_by": "index1"}
    )
    assert actions(out) == [
        (1, "STARTED_FLOW", None),
        (2, "COMPLETED_STEP", "invite-team"),
        (3, "SKIPPED_FLOW", None),
        (4, "DROP", None),
        (5, "something odd", None),
    ]
    assert out.filter(pl.col("source_row") == 5).get_column("reason").item() == "unknown action 'something odd'"


def test_pendo_first_seen_starts_the_flow_and_last_advance_completes_it(tmp_path: Path) -> None:
    rows = [
        ("welcome", "guideSeen", 0),
        ("welcome", "guideAdvanced", 1),
        ("sidebar", "guideSeen", 2),
        ("sidebar", "guideAdvanced", 3),
        ("search", "guideSeen", 4),
        ("search", "guideAdvanced", 5),
    ]
    text = "visitor_id,guide_id,guide_step_id,type,timestamp\n" + "".join(
        f"v1,flow_welcome_tour,{s},{t},{1709283600000 + 1000 * i}\n" for s, t, i in rows
    )
    out = run(write(tmp_path, "p.csv", text), "pendo")
    assert actions(out) == [
        (1, "STARTED_FLOW", None),
        (1, "STARTED_STEP", "welcome"),
        (2, "COMPLETED_STEP", "welcome"),
        (3, "STARTED_STEP", "sidebar"),
        (4, "COMPLETED_STEP", "sidebar"),
        (5, "STARTED_STEP", "search"),
        (6, "COMPLETED_STEP", "search"),
        (6, "COMPLETED_FLOW", None),
    ]
    assert state_of(out)["v1"]["flow_welcome_tour"]["completed"]


def test_userflow_seeing_the_next_step_completes_the_previous(tmp_path: Path) -> None:
    text = (
        "name,user_id,flow_id,flow_step_number,time\n"
        "flow_step_seen,u1,flow_onboarding,0,2024-03-01T10:00:00Z\n"
        "flow_step_seen,u1,flow_onboarding,1,2024-03-01T10:01:00Z\n"
        "flow_step_seen,u1,flow_onboarding,2,2024-03-01T10:02:00Z\n"
    )
    # by 0-based step number, which needs no catalog for this inference
    doc = {"step": ["flow_step_number"], "step_by": "index0", "completed_flow_completes_last_step": False}
    path = write(tmp_path, "uf.csv", text)
    mapping = resolve_mapping("userflow", doc)
    events = map_events(pl.scan_csv(path, infer_schema=False), mapping, "uf.csv").collect()
    got = events.sort("source_row", "ts").select("action", "step_index").rows()
    assert got == [
        ("STARTED_STEP", 0),
        ("STARTED_STEP", 1),
        ("COMPLETED_STEP", 0),
        ("STARTED_STEP", 2),
        ("COMPLETED_STEP", 1),
    ]
    state = state_of(run(path, "userflow", doc))["u1"]["flow_onboarding"]
    assert [s["completed"] for s in state["steps"].values()] == [True, True, False, False]
    assert state["current_step_index"] == 2


def test_state_rows_become_the_events_that_produce_them(tmp_path: Path) -> None:
    text = (
        "User ID,Flow,Status,Current Step,Last Updated\n"
        "u1,flow_onboarding,In Progress,create-dashboard,2024-03-01T10:00:00Z\n"
        "u2,flow_onboarding,Skipped,connect-data,2024-03-01T10:00:00Z\n"
        "u3,flow_onboarding,Completed,set-alerts,2024-03-01T10:00:00Z\n"
        "u4,flow_onboarding,In Progress,retired-step,2024-03-01T10:00:00Z\n"
    )
    out = run(write(tmp_path, "f.csv", text), "frigade-csv")
    state = state_of(out)
    flags = {
        u: [(s["started"], s["completed"]) for s in v["flow_onboarding"]["steps"].values()] for u, v in state.items()
    }
    assert flags["u1"] == [(True, True), (True, True), (True, False), (False, False)]
    assert flags["u2"] == [(True, False), (False, False), (False, False), (False, False)]
    assert flags["u3"] == [(True, True)] * 4
    assert state["u2"]["flow_onboarding"]["skipped"]
    assert state["u3"]["flow_onboarding"]["completed"]
    u4 = out.filter(pl.col("user_id") == "u4").sort("ts")
    assert u4.get_column("status").to_list() == ["valid", "quarantined"]
    assert u4.get_column("reason").to_list()[1] == "unknown step 'retired-step' in flow 'flow_onboarding'"


WIDE_DOC = {
    "flow_map": {"onboarding": "flow_onboarding", "tour": "flow_welcome_tour", "announcement": "flow_announcement"},
    "step_by": "index1",
    "default_time": "2024-04-01T00:00:00Z",
}


def test_wide_flags_times_and_lists_unpivot(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pl.DataFrame(
        {
            "id": ["a", "b", "c"],
            "onboarding_completed": [True, False, False],
            "onboarding_completed_at": [datetime(2024, 3, 2, tzinfo=UTC), None, None],
            "tour_step_2_done": [1, 0, 1],
            "tour_skipped_at": [None, "2024-03-05T08:00:00Z", None],
            "completed_tours": [["announcement"], [], None],
            "login_count": [4, 1, 0],
        }
    ).write_parquet(path)
    out = run(path, "wide", WIDE_DOC)
    # (a row's events are spaced by microseconds in column order: compare to the second)
    got = sorted(out.select("user_id", "flow_slug", "step_id", "action", pl.col("ts").dt.truncate("1s")).rows())
    april = datetime(2024, 4, 1, tzinfo=UTC)
    assert got == [
        ("a", "flow_announcement", None, "COMPLETED_FLOW", april),
        ("a", "flow_onboarding", None, "COMPLETED_FLOW", datetime(2024, 3, 2, tzinfo=UTC)),
        ("a", "flow_welcome_tour", "sidebar", "COMPLETED_STEP", april),
        ("b", "flow_welcome_tour", None, "SKIPPED_FLOW", datetime(2024, 3, 5, 8, tzinfo=UTC)),
        ("c", "flow_welcome_tour", "sidebar", "COMPLETED_STEP", april),
    ]
    assert (out.get_column("status") == "valid").all()


def test_wide_flags_need_a_time_or_a_declared_default(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", "id,tour_step_1_done\na,true\n")
    with pytest.raises(InputError, match="no default_time"):
        run(path, "wide", {"flow_map": {"tour": "flow_welcome_tour"}, "step_by": "index1"})


def test_wide_text_lists_in_several_notations(tmp_path: Path) -> None:
    text = 'id,completed_tours\na,"[""tour"", ""announcement""]"\nb,"{tour,announcement}"\nc,tour;announcement\n'
    doc: dict[str, Any] = {
        **WIDE_DOC,
        "wide": [{"columns": "^completed_tours$", "action": "COMPLETED_FLOW", "value": "list", "separator": ";"}],
    }
    out = run(write(tmp_path, "w.csv", text), "wide", doc)
    per_user = out.group_by("user_id").agg(pl.col("flow_slug").sort()).sort("user_id")
    assert per_user.get_column("flow_slug").to_list()[2] == ["flow_announcement", "flow_welcome_tour"]
    doc["wide"][0]["separator"] = ","
    out = run(write(tmp_path, "w2.csv", text.replace("c,tour;announcement\n", "")), "wide", doc)
    assert out.height == 4


def test_a_users_mapping_can_do_what_a_preset_does(tmp_path: Path) -> None:
    text = "who,what,when\nu1,tour.finished,1709283600\n"
    doc = {
        "user": ["who"],
        "action": ["what"],
        "time": ["when"],
        "time_format": "epoch_s",
        "event_pattern": r"^(?P<flow>[a-z]+)\.(?P<event>[a-z]+)$",
        "flow_map": {"tour": "flow_welcome_tour"},
        "action_map": {"finished": "COMPLETED_FLOW+COMPLETED_STEP"},
        "completed_flow_completes_last_step": True,
        "flow_actions_ignore_step": True,
    }
    out = run(write(tmp_path, "own.csv", text), "long", doc)
    assert sorted(out.select("action", "step_id").rows(), key=str) == sorted(
        [("COMPLETED_FLOW", None), ("COMPLETED_STEP", None), ("COMPLETED_STEP", "search")], key=str
    )


def test_mapping_stays_lazy_and_vectorised_on_large_input() -> None:
    n = 400_000
    lf = pl.LazyFrame(
        {
            "visitor_id": pl.int_range(0, n, eager=True).cast(pl.String),
            "guide_id": ["flow_welcome_tour"] * n,
            "guide_step_id": ["welcome", "sidebar", "search", "search"] * (n // 4),
            "type": ["guideSeen", "guideAdvanced", "guideSeen", "guideAdvanced"] * (n // 4),
            "timestamp": pl.int_range(1709283600000, 1709283600000 + n, eager=True).cast(pl.String),
        }
    )
    _, steps = frames()
    events = map_events(lf, PRESETS["pendo"], "big.csv", steps=steps)
    assert isinstance(events, pl.LazyFrame)
    assert "python" not in events.explain().lower()  # no Python UDF in the plan
    start = time.perf_counter()
    counts = events.group_by("action").len().collect()
    assert time.perf_counter() - start < 30
    assert counts.get_column("len").sum() > n


def test_presets_are_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "transforms" / "presets" / "README.md").read_text()
    for name, preset in PRESETS.items():
        assert f"`{name}`" in readme
        assert preset.description
    for f in fields(SourceMapping):
        assert f.name in NOT_IN_DOCUMENTS or f"`{f.name}`" in readme, f.name
    assert mapping_from_dict({}).name == "long"
