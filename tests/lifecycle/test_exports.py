"""The prepare stage on small files: accounting, quarantine reasons with rows, exit-2 errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from emulator.sample import sample_catalog
from frigade.catalog import Catalog
from lifecycle.exports import analyze_exports, plan_exports
from lifecycle.statedir import StateDir
from transforms.accounting import accounting_closes
from transforms.analysis import Prepared, plan_requests
from transforms.outcomes import left_at_target
from transforms.presets import resolve_mapping
from transforms.schema import InputError
from transforms.snapshot import SNAPSHOT_SCHEMA
from transforms.sync import EVENTS_HASH_SCHEMA
from transforms.work import request_body_fields

HEADER = "user_id,flow_slug,step_id,action,created_at,data\n"


def run(tmp_path: Path, body: str, **overrides: object) -> Prepared:
    f = tmp_path / "e.csv"
    f.write_text(HEADER + body)
    return plan_exports([f], resolve_mapping(None, None, dict(overrides) or None), sample_catalog())


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("u1,flow_nope,,STARTED_FLOW,2024-01-01T00:00:00Z,", "unknown flow 'flow_nope' (not in the catalog)"),
        (
            "u1,flow_welcome_tour,nope,STARTED_STEP,2024-01-01T00:00:00Z,",
            "unknown step 'nope' in flow 'flow_welcome_tour'",
        ),
        ("u1,flow_welcome_tour,,JUMPED,2024-01-01T00:00:00Z,", "unknown action 'JUMPED'"),
        (",flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,", "missing user id"),
        ("u1,flow_welcome_tour,,STARTED_FLOW,not a time,", "unparseable time"),
        ("u1,flow_welcome_tour,,STARTED_FLOW,,", "missing time"),
        (
            "u1,flow_welcome_tour,welcome,STARTED_FLOW,2024-01-01T00:00:00Z,",
            "STARTED_FLOW is a flow action but the row names step 'welcome'",
        ),
        ("u1,flow_welcome_tour,,COMPLETED_STEP,2024-01-01T00:00:00Z,", "COMPLETED_STEP needs a step"),
        ("u1,flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,[1]", "data is not a JSON object"),
    ],
)
def test_each_quarantine_reason_names_its_row(tmp_path: Path, row: str, reason: str) -> None:
    good = "u2,flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,\n"
    prepared = run(tmp_path, good + row + "\n")
    q = prepared.quarantine
    assert q.height == 1
    assert q["reason"][0] == reason
    assert q["source_row"][0] == 2
    assert q["source_file"][0].endswith("e.csv")
    assert accounting_closes(prepared.counts)


def test_duplicates_and_redundant_rows_are_counted_and_the_equation_closes(tmp_path: Path) -> None:
    body = (
        "u1,flow_welcome_tour,welcome,STARTED_STEP,2024-01-01T00:00:01Z,\n"
        "u1,flow_welcome_tour,welcome,COMPLETED_STEP,2024-01-01T00:00:02Z,\n"
        "u1,flow_welcome_tour,welcome,COMPLETED_STEP,2024-01-01T00:00:02Z,\n"
        "u1,flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,\n"
    )
    p = run(tmp_path, body)
    c = p.counts
    assert c["events_duplicate"] == 1
    assert c["requests_planned"] == 1
    assert (c["rows_sent"], c["rows_redundant"]) == (1, 3)
    assert accounting_closes(c)


def test_naive_times_without_a_declared_zone_stop_the_run(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        run(tmp_path, "u1,flow_welcome_tour,,STARTED_FLOW,2024-01-01 10:00:00,\n")
    msg = str(info.value)
    assert "e.csv" in msg
    assert "row 1" in msg
    assert "'time'" in msg
    p = run(tmp_path, "u1,flow_welcome_tour,,STARTED_FLOW,2024-01-01 10:00:00,\n", timezone="Europe/Paris")
    assert str(p.plan["created_at"][0]) == "2024-01-01 09:00:00+00:00"


def test_missing_file_and_missing_column_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        plan_exports([tmp_path / "nope.csv"], resolve_mapping(None), sample_catalog())
    f = tmp_path / "x.csv"
    f.write_text("user_id,flow_slug\nu1,flow_welcome_tour\n")
    with pytest.raises(InputError, match="missing column"):
        plan_exports([f], resolve_mapping(None), sample_catalog())


def test_request_fields_carry_time_as_iso_utc_and_data_as_an_object() -> None:
    row = {
        "request_id": "u|f|0",
        "user_id": "u",
        "group_id": None,
        "flow_slug": "f",
        "seq": 0,
        "action": "STARTED_FLOW",
        "step_id": None,
        "data": '{"a": 1}',
        "created_at": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    }
    fields = request_body_fields(row)
    assert fields["created_at"] == "2024-05-06T07:08:09.123Z"
    assert fields["data"] == {"a": 1}


def test_event_ids_reused_across_files_and_user_flows_are_duplicates_not_a_crash(tmp_path: Path) -> None:
    """Two per-flow exports that each number their events from 1: the second file's user-flows lose
    every event to the first's ids (the first in order is kept), and planning goes on."""
    head = "user_id,flow_slug,step_id,action,created_at,event_id\n"
    files = []
    for name, flow in (("a.csv", "flow_onboarding"), ("b.csv", "flow_welcome_tour")):
        f = tmp_path / name
        f.write_text(
            head + f"u1,{flow},,STARTED_FLOW,2024-01-01T00:00:00Z,1\nu2,{flow},,STARTED_FLOW,2024-01-01T00:00:00Z,2\n"
        )
        files.append(f)
    prepared = plan_exports(files, resolve_mapping(None), sample_catalog())
    assert prepared.counts["events_duplicate"] == 2
    assert prepared.plan.height == 2
    assert accounting_closes(prepared.counts)


def test_a_dropped_row_with_a_naive_time_is_dropped_not_an_error(tmp_path: Path) -> None:
    body = (
        "u1,flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,\n"
        "u1,flow_welcome_tour,,page_view,2024-01-01 00:00:05,\n"
    )
    prepared = run(tmp_path, body, drop_events=["page_view"])
    assert prepared.counts["rows_dropped"] == 1
    assert prepared.counts["rows_sent"] == 1


def test_quarantined_rows_of_a_typed_time_column_show_the_time_in_iso(tmp_path: Path) -> None:
    f = tmp_path / "e.parquet"
    pl.DataFrame(
        {
            "user_id": ["u1"],
            "flow_slug": ["flow_nope"],
            "action": ["STARTED_FLOW"],
            "created_at": [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)],
        }
    ).write_parquet(f)
    prepared = plan_exports([f], resolve_mapping(None), sample_catalog())
    assert prepared.quarantine["ts_raw"].to_list() == ["2024-01-02T03:04:05Z"]


def test_a_sync_skips_users_whose_events_print_the_same(tmp_path: Path) -> None:
    """Users whose valid events (and catalog) are unchanged since the remembered prints are not
    planned again; their rows count as redundant and the accounting closes."""
    rows = {
        "u1": "u1,flow_welcome_tour,welcome,STARTED_STEP,2024-01-01T00:00:01Z,\n",
        "u2": "u2,flow_welcome_tour,welcome,COMPLETED_STEP,2024-01-01T00:00:02Z,\n",
        "u3": "u3,flow_onboarding,,STARTED_FLOW,2024-01-01T00:00:03Z,\n",
    }
    f = tmp_path / "e.csv"
    f.write_text(HEADER + "".join(rows.values()))
    mapping, catalog = resolve_mapping(None), sample_catalog()
    first = analyze_exports([f], mapping, catalog, hash_events=True)
    assert first.events_hashes is not None
    assert sorted(first.events_hashes["user_id"].to_list()) == ["u1", "u2", "u3"]
    # u2 moves on; the rows of u1 and u3 are the same, in another order
    f.write_text(
        HEADER
        + rows["u3"]
        + rows["u2"]
        + "u2,flow_welcome_tour,sidebar,STARTED_STEP,2024-01-02T00:00:00Z,\n"
        + rows["u1"]
    )
    again = analyze_exports([f], mapping, catalog, hash_events=True, known=first.events_hashes)
    assert again.event_counts["users_unchanged"] == 2
    assert again.events_hashes is not None
    assert again.events_hashes["user_id"].to_list() == ["u2"]
    prepared = plan_requests(again)
    assert set(prepared.plan["user_id"]) == {"u2"}
    # u1's and u3's rows, and u2's STARTED_STEP sidebar: completing welcome already starts sidebar
    assert prepared.counts["rows_redundant"] == 3
    assert accounting_closes(prepared.counts)
    # another catalog prints differently: nobody is skipped
    other = Catalog(tuple(replace(fl, step_ids=(*fl.step_ids, "extra")) for fl in catalog.flows))
    assert (
        analyze_exports([f], mapping, other, hash_events=True, known=first.events_hashes).event_counts[
            "users_unchanged"
        ]
        == 0
    )


def test_only_users_left_exactly_at_their_target_keep_a_print() -> None:
    analysed = pl.DataFrame(
        {"user_id": ["u1", "u2", "u3", "u4"], "events_hash": [1, 2, 3, 4]}, schema=EVENTS_HASH_SCHEMA
    )
    plan_ = pl.DataFrame({"request_id": ["a", "b", "c", "d"], "user_id": ["u1", "u2", "u3", "u3"]})
    latest = pl.DataFrame({"request_id": ["a", "b", "c"], "outcome": ["sent", "rejected", "resolved_applied"]})
    mismatches = pl.DataFrame({"user_id": ["u1"]})
    # u1: sent but mismatched; u2: rejected; u3: one request never tried; u4: nothing to send
    assert left_at_target(analysed, plan_, latest, mismatches)["user_id"].to_list() == ["u4"]


def test_the_state_folder_replaces_the_prints_of_the_users_a_run_analysed(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    snap = pl.DataFrame(schema=SNAPSHOT_SCHEMA)
    first = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "events_hash": [1, 2, 3]}, schema=EVENTS_HASH_SCHEMA)
    state.record(snap, "r1", None, (first, first))
    analysed = pl.DataFrame({"user_id": ["u2", "u3"], "events_hash": [20, 30]}, schema=EVENTS_HASH_SCHEMA)
    state.record(snap, "r2", None, (analysed, analysed.filter(pl.col("user_id") == "u3")))
    got = dict(state.load_events_hashes().iter_rows())
    assert got == {"u1": 1, "u3": 30}


def test_a_sync_replans_a_user_whose_tied_events_changed_order(tmp_path: Path) -> None:
    """Same rows, other order: events at one time replay in export order, so the print must see it."""
    start = "u1,flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,\n"
    done = "u1,flow_welcome_tour,,COMPLETED_FLOW,2024-01-01T00:05:00Z,\n"
    reset = "u1,flow_welcome_tour,,NOT_STARTED_FLOW,2024-01-01T00:05:00Z,\n"
    f = tmp_path / "e.csv"
    mapping, catalog = resolve_mapping(None), sample_catalog()
    f.write_text(HEADER + start + done + reset)
    first = analyze_exports([f], mapping, catalog, hash_events=True)
    f.write_text(HEADER + start + reset + done)
    again = analyze_exports([f], mapping, catalog, hash_events=True, known=first.events_hashes)
    assert again.event_counts["users_unchanged"] == 0
    assert "COMPLETED_FLOW" in plan_requests(again).plan["action"].to_list()


def test_a_sync_plans_a_changed_user_as_a_full_analysis_would(tmp_path: Path) -> None:
    """Skipping users must not change anyone else's events: ids shared across users are not
    duplicates of one another."""
    head = "user_id,flow_slug,step_id,action,created_at,event_id\n"
    ua = "ua,flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,e1\n"
    ub = "ub,flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z,e1\n"
    f = tmp_path / "e.csv"
    mapping, catalog = resolve_mapping(None), sample_catalog()
    f.write_text(head + ub + ua)
    first = analyze_exports([f], mapping, catalog, hash_events=True)
    assert first.event_counts["events_duplicate"] == 0
    f.write_text(head + ub + ua + "ua,flow_onboarding,,STARTED_FLOW,2024-01-02T00:00:00Z,e2\n")
    full = plan_requests(analyze_exports([f], mapping, catalog)).plan.filter(pl.col("user_id") == "ua")
    synced = plan_requests(analyze_exports([f], mapping, catalog, hash_events=True, known=first.events_hashes)).plan
    cols = ["user_id", "flow_slug", "seq", "action"]
    assert synced.select(cols).sort(cols).equals(full.select(cols).sort(cols))


def test_a_run_without_prints_makes_the_state_folder_forget_its_users_prints(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    empty = pl.DataFrame(schema=SNAPSHOT_SCHEMA)
    prints = pl.DataFrame({"user_id": ["u1", "u2"], "events_hash": [1, 2]}, schema=EVENTS_HASH_SCHEMA)
    state.record(empty, "r1", None, (prints, prints))
    snap = pl.DataFrame(
        [{"user_id": "u1", "flow_slug": "f", "step_id": None, "flow_started": True, "flow_completed": True}],
        schema=SNAPSHOT_SCHEMA,
    )
    state.record(snap, "r2", None)
    assert state.load_events_hashes()["user_id"].to_list() == ["u2"]
