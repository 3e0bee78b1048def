"""Home-grown state tables (``state_table`` in a mapping): each status column's times or flags become
events, rows without an item are about the whole flow, and each flow's completion rule applies."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from samples.state_table import EXPORT, FOLDER, render
from transforms.analysis import Source, analyze, plan_requests
from transforms.presets import resolve_mapping
from transforms.schema import InputError
from transforms.spec import mapping_from_dict

from .test_messy import run, write
from .test_presets import DATA, load_catalog, scan, state_of

SAMPLE = DATA / FOLDER
HEADER = "user_id,checklist,item,started_at,completed_at,dismissed\n"
BASE: dict[str, Any] = {
    "user": "user_id",
    "flow": "checklist",
    "step": "item",
    "state_table": {"started": "started_at", "completed": "completed_at", "dismissed": "dismissed"},
    "flow_map": {"list": "flow_onboarding", "tour": "flow_welcome_tour"},
}


def table(tmp_path: Path, rows: list[str], doc: dict[str, Any] | None = None) -> pl.DataFrame:
    return run(write(tmp_path, "t.csv", HEADER + "".join(r + "\n" for r in rows)), "long", {**BASE, **(doc or {})})


def events(out: pl.DataFrame) -> list[tuple[int, str, str | None, str]]:
    rows = out.sort("source_row", "ts").select("source_row", "action", "step_id", "status").rows()
    return [(int(r), str(a), s, str(st)) for r, a, s, st in rows]


def test_the_committed_sample_is_what_the_generator_writes() -> None:
    for name, text in render().items():
        assert (SAMPLE / name).read_text(encoding="utf-8") == text, name


def test_the_sample_maps_to_its_expected_state_and_its_accounting_closes() -> None:
    expected = yaml.safe_load((SAMPLE / "expected.json").read_text())
    mapping = resolve_mapping("long", yaml.safe_load((SAMPLE / "mapping.yaml").read_text()))
    path = SAMPLE / EXPORT
    out = run(path, "long", yaml.safe_load((SAMPLE / "mapping.yaml").read_text()))
    assert state_of(out) == expected["users"]
    c = plan_requests(analyze([Source(path.name, scan(path))], mapping, load_catalog())).counts
    assert (c["rows_in"], c["rows_dropped"], c["rows_quarantined"]) == (
        expected["rows"],
        expected["rows_dropped"],
        expected["rows_quarantined"],
    )
    assert c["rows_in"] == c["rows_sent"] + c["rows_redundant"] + c["rows_dropped"] + c["rows_quarantined"]
    assert c["rows_flow_left_out"] == 1


def test_items_are_steps_and_rows_without_one_are_the_whole_flow(tmp_path: Path) -> None:
    out = table(
        tmp_path,
        [
            "u1,tour,welcome,2024-09-08 02:40:00+00,2024-09-08 02:41:00.5+00,f",
            "u1,tour,sidebar,2024-09-08 02:42:00+00,,false",
            "u1,list,,2024-09-08 02:30:00+00,,t",
            "u1,list,invite-team,,2024-09-08 02:35:00+00,0",
        ],
    )
    assert events(out) == [
        (1, "STARTED_STEP", "welcome", "valid"),
        (1, "COMPLETED_STEP", "welcome", "valid"),
        (2, "STARTED_STEP", "sidebar", "valid"),
        (3, "STARTED_FLOW", None, "valid"),
        (3, "SKIPPED_FLOW", None, "valid"),
        (4, "COMPLETED_STEP", "invite-team", "valid"),
    ]


def test_a_flag_is_at_the_latest_time_of_its_flow_else_the_rows_time_else_default_time(tmp_path: Path) -> None:
    rows = [
        "u1,list,,,,t",  # dismissed: after the item completed later in another row
        "u1,list,invite-team,,2024-09-08 05:00:00+00,f",
        "u2,list,,,,yes",  # nothing dated in u2's checklist
    ]
    out = table(tmp_path, rows).sort("source_row", "ts")
    dismissed, completed, undated = out.get_column("ts").to_list()
    # a row's events are spaced by a microsecond per status: the dismissal sorts after the completion
    assert completed == datetime(2024, 9, 8, 5, 0, 0, 1, tzinfo=UTC)
    assert dismissed == datetime(2024, 9, 8, 5, 0, 0, 2, tzinfo=UTC)
    assert undated is None
    assert out.row(2, named=True)["status"] == "quarantined"
    assert out.row(2, named=True)["reason"].startswith("missing time: a flag with no time")
    with_default = table(tmp_path, rows, {"default_time": "2024-10-01T00:00:00Z"}).sort("source_row")
    assert with_default.row(2, named=True)["status"] == "valid"
    assert with_default.row(2, named=True)["ts"] == datetime(2024, 10, 1, 0, 0, 0, 2, tzinfo=UTC)
    dated = write(
        tmp_path,
        "dated.csv",
        "user_id,checklist,item,completed_at,dismissed,updated_at\n"
        "u1,list,,,t,2024-09-08 07:00:00+00\n"
        "u1,list,invite-team,2024-09-08 09:00:00+00,f,\n",
    )
    st = {"completed": "completed_at", "dismissed": "dismissed", "time": "updated_at"}
    by_row = run(dated, "long", {**BASE, "state_table": st}).sort("source_row")
    assert by_row.get_column("ts").to_list()[0] == datetime(2024, 9, 8, 7, 0, 0, 2, tzinfo=UTC)


def test_flags_may_be_booleans_numbers_or_words(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "checklist": ["list"] * 3,
            "item": ["invite-team"] * 3,
            "done": [True, False, None],
            "skipped": [0, 1, 0],
            "at": ["2024-09-08T10:00:00Z"] * 3,
        }
    ).write_parquet(path)
    doc = {**BASE, "state_table": {"completed": "done", "dismissed": "skipped", "time": "at"}}
    out = run(path, "long", doc)
    assert events(out) == [(1, "COMPLETED_STEP", "invite-team", "valid"), (2, "SKIPPED_STEP", "invite-team", "valid")]


def test_an_unreadable_time_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    out = table(tmp_path, ["u1,tour,welcome,yesterday,,f", "u1,tour,sidebar,2024-09-08 02:42:00,,f"])
    assert out.sort("source_row").get_column("reason").to_list() == [
        "unparseable time",
        "time has no zone and the source declares none (set timezone)",
    ]


def test_completion_rules_are_per_flow(tmp_path: Path) -> None:
    """A checklist is complete when all its items are, in any order; a tour by its last step; neither
    rule touches the other flow."""
    items = ["set-alerts", "connect-data", "create-dashboard", "invite-team"]
    rows = [f"u1,list,{s},,2024-09-08 0{n}:00:00+00,f" for n, s in enumerate(items)]
    rows += ["u1,tour,search,,2024-09-08 09:00:00+00,f"]
    rows += [f"u2,list,{s},,2024-09-08 0{n}:00:00+00,f" for n, s in enumerate(items[:3])]
    rows += ["u2,list,set-alerts,,2024-09-08 05:00:00+00,f"]  # the checklist's last step, not all of it
    doc = {"all_steps_complete_flow": ["flow_onboarding"], "last_step_completes_flow": ["flow_welcome_tour"]}
    state = state_of(table(tmp_path, rows, doc))
    assert state["u1"]["flow_onboarding"]["completed"] is True
    assert state["u1"]["flow_welcome_tour"]["completed"] is True
    assert state["u2"]["flow_onboarding"]["completed"] is False
    neither = state_of(table(tmp_path, rows))
    assert not neither["u1"]["flow_onboarding"]["completed"]
    assert not neither["u1"]["flow_welcome_tour"]["completed"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"state_table": {"finished": "x"}}, "state_table has unknown keys finished"),
        ({"state_table": ["x"]}, "state_table must be a mapping"),
        ({"last_step_completes_flow": "flow_a"}, "last_step_completes_flow must be true, false or a list"),
        ({"state_table": {"completed": "x"}, "wide": [{"columns": "a", "action": "COMPLETED_FLOW"}]}, "not both"),
    ],
)
def test_bad_state_table_mappings_say_what_is_wrong(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        mapping_from_dict(doc, where="m.yaml")


def test_a_table_without_any_status_column_names_them(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "user_id,checklist,item\nu1,list,a\n")
    with pytest.raises(InputError, match=r"none of the state_table columns .*'completed_at'") as err:
        run(path, "long", BASE)
    assert err.value.file == "t.csv"


def test_inspect_previews_a_state_table_without_a_catalog() -> None:
    from transforms.inspect import inspect_sample
    from transforms.presets import PRESETS

    mapping = resolve_mapping("long", yaml.safe_load((SAMPLE / "mapping.yaml").read_text()))
    got = inspect_sample(scan(SAMPLE / EXPORT).head(20), EXPORT, PRESETS, mapping=mapping)
    assert got.events.height > 0
    assert any("all_steps_complete_flow" in n for n in got.notes)


def test_typed_time_columns_are_read_as_they_are(tmp_path: Path) -> None:
    """Parquet from a warehouse: timestamptz as an aware datetime, a date, a boolean flag."""
    path = tmp_path / "t.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "checklist": ["tour", "tour"],
            "item": ["welcome", None],
            "started_at": [datetime(2024, 9, 8, 2, 0, tzinfo=UTC), None],
            "completed_at": [datetime(2024, 9, 8, 3, 0, tzinfo=UTC), None],
            "dismissed": [False, True],
        }
    ).write_parquet(path)
    out = run(path, "long", BASE).sort("source_row", "ts")
    assert out.select("action", "ts").rows() == [
        ("STARTED_STEP", datetime(2024, 9, 8, 2, 0, tzinfo=UTC)),
        ("COMPLETED_STEP", datetime(2024, 9, 8, 3, 0, 0, 1, tzinfo=UTC)),
        ("SKIPPED_FLOW", datetime(2024, 9, 8, 3, 0, 0, 2, tzinfo=UTC)),
    ]
