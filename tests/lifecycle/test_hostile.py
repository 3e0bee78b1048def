"""Hostile exports (issue 12, the input half), each a real file through the real loader: refused with an
InputError naming the file and row, or accepted with every poison row quarantined and the accounting
closed."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emulator.sample import sample_catalog
from frigade.push import PlannedRequest, write_of
from lifecycle.exports import check_exports, plan_exports
from transforms.accounting import accounting_closes
from transforms.analysis import Prepared
from transforms.presets import resolve_mapping
from transforms.schema import InputError
from transforms.work import iter_user_requests, request_body_fields

HEADER = "user_id,flow_slug,step_id,action,created_at,data\n"
GOOD = "u1,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n"


def csv_file(tmp_path: Path, body: str, name: str = "e.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def jsonl_file(tmp_path: Path, rows: list[dict[str, Any]], name: str = "e.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(paths: list[Path], preset: str | None = None, doc: dict[str, Any] | None = None) -> Prepared:
    prepared = plan_exports(paths, resolve_mapping(preset, doc), sample_catalog())
    assert accounting_closes(prepared.counts), prepared.counts
    return prepared


def reasons(prepared: Prepared) -> dict[str, str]:
    q = prepared.quarantine.sort("source_row")
    return dict(zip(q.get_column("user_id").to_list(), q.get_column("reason").to_list(), strict=True))


def sendable(prepared: Prepared) -> None:
    """Every planned request builds and encodes, as the push would."""
    for _, rows in iter_user_requests(prepared.plan):
        for r in rows:
            write_of(PlannedRequest(**request_body_fields(r))).body()


# ---------------------------------------------------------------- 1. poison rows


def test_poison_values_are_quarantined_and_what_is_planned_can_be_sent(tmp_path: Path) -> None:
    deep = '"' + "{" * 2500 + '\\"a\\":1' + "}" * 2500 + '"'
    deep_json = json.dumps('{"a":' * 5000 + "1" + "}" * 5000)
    body = (
        GOOD
        + "year5,flow_welcome_tour,,STARTED_FLOW,+12024-01-01T00:00:00Z,\n"
        + f"deep,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,{deep_json}\n"
        + f"deep2,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,{deep}\n"
        + f"{'x' * 600},flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n"
        + "longstep,flow_welcome_tour,"
        + "s" * 600
        + ",STARTED_STEP,2024-03-01T10:00:00Z,\n"
        + "notjson,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,{not json}\n"
        + "big,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,"
        + json.dumps(json.dumps({"blob": "y" * 70_000}))
        + "\n"
        + 'fine,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,"{""a"": {""b"": [1, 2]}}"\n'
    )
    prepared = run([csv_file(tmp_path, body)])
    got = reasons(prepared)
    assert got["year5"] == "time more than 24h in the future (max_future): check the time column and time_format"
    year5 = prepared.quarantine.filter(pl.col("user_id") == "year5")
    assert year5.get_column("ts_raw").item() == "+12024-01-01T00:00:00Z"
    assert got["deep"] == "data is not a JSON object of at most 127 levels"
    assert got["deep2"] == "data is not a JSON object of at most 127 levels"
    assert got["x" * 600] == "user id longer than 512 bytes"
    assert got["longstep"] == "step id longer than 512 bytes"
    assert got["notjson"] == "data is not a JSON object"
    assert got["big"] == "data larger than 64 KiB"
    assert sorted(prepared.plan.get_column("user_id").unique()) == ["fine", "u1"]
    assert prepared.counts["rows_quarantined"] == 7
    sendable(prepared)


def test_a_time_python_cannot_hold_is_quarantined_however_wide_the_window(tmp_path: Path) -> None:
    """Opened as wide as it goes, the window still ends at year 9999 (what the request encoder holds);
    times inside it reach the push as text formatted by polars, never as Python datetimes."""
    body = GOOD + "far,flow_welcome_tour,,STARTED_FLOW,+12024-01-01T00:00:00Z,\n"
    body += "y9000,flow_welcome_tour,,STARTED_FLOW,9000-01-01T00:00:00Z,\n"
    doc = {"max_future": "5000000d", "earliest_time": "0001-01-01T00:00:00Z"}
    prepared = run([csv_file(tmp_path, body)], None, doc)
    assert list(reasons(prepared)) == ["far"]
    times = {r["user_id"]: r["created_at"] for _, rows in iter_user_requests(prepared.plan) for r in rows}
    assert times == {"u1": "2024-03-01T10:00:00.000Z", "y9000": "9000-01-01T00:00:00.000Z"}
    sendable(prepared)


# ---------------------------------------------------------------- 2. unreadable files


def _million_rows(tmp_path: Path) -> tuple[Path, int]:
    n = 1_000_000
    frame = pl.DataFrame({"i": pl.int_range(0, n, eager=True)}).select(
        pl.format("user-{}", pl.col("i") % 50_000).alias("user_id"),
        pl.lit("flow_welcome_tour").alias("flow_slug"),
        pl.lit("").alias("step_id"),
        pl.lit("STARTED_FLOW").alias("action"),
        pl.lit("2024-03-01T10:00:00Z").alias("created_at"),
        pl.lit("").alias("data"),
    )
    path = tmp_path / "million.csv"
    frame.write_csv(path)
    bad_row = 654_321
    lines = path.read_bytes().split(b"\n")
    lines[bad_row] = b"user-x,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,,surplus"
    path.write_bytes(b"\n".join(lines))
    return path, bad_row


def test_one_ragged_row_in_a_million_stops_the_file_naming_it(tmp_path: Path) -> None:
    path, bad_row = _million_rows(tmp_path)
    with pytest.raises(
        InputError, match=rf"row {bad_row}\b.*1 malformed row.*row {bad_row} \(line {bad_row + 1}\) has 7 fields"
    ) as exc:
        check_exports([path], resolve_mapping(None))
    assert exc.value.file == str(path)
    assert exc.value.row == bad_row
    with pytest.raises(InputError, match=f"row {bad_row}"):
        plan_exports([path], resolve_mapping(None), sample_catalog())


def _parquet(tmp_path: Path, name: str, cut: int | None = None, dup: bool = False) -> Path:
    path = tmp_path / name
    table = pa.table(
        {
            "user_id": ["u1", "u2"],
            "flow_slug": ["flow_welcome_tour"] * 2,
            "action": ["STARTED_FLOW"] * 2,
            "created_at": ["2024-03-01T10:00:00Z"] * 2,
        }
    )
    if dup:
        table = pa.Table.from_arrays([*table.columns, table.column(0)], names=[*table.column_names, "user_id"])
    pq.write_table(table, path)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    return path


JROW = {
    "user_id": "u1",
    "flow_slug": "flow_welcome_tour",
    "action": "STARTED_FLOW",
    "created_at": "2024-03-01T10:00:00Z",
}


def _two_types(tmp_path: Path) -> Path:
    """Past the lines polars infers types from, a field that held objects holds text."""
    ev = {
        "event": "flow_started",
        "properties": {"distinct_id": "m1", "time": 1709287200, "flow_id": "flow_announcement"},
    }
    return jsonl_file(tmp_path, [ev] * 10_001 + [{**ev, "properties": "m2"}])


CASES: dict[str, tuple[Any, str]] = {
    "unbalanced quote": (
        lambda t: csv_file(t, GOOD + 'u2,"flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n' + GOOD),
        r"row 2: a quote opened on line 3 is never closed",
    ),
    "short row": (
        lambda t: csv_file(t, GOOD + "u2,flow_welcome_tour,STARTED_FLOW,2024-03-01T10:00:00Z\n"),
        r"row 2 \(line 3\) has 4 fields",
    ),
    "long row": (
        lambda t: csv_file(t, GOOD * 3 + "u2,flow_welcome_tour,,STARTED_FLOW,2024,,x\n"),
        r"row 4 \(line 5\) has 7 fields",
    ),
    "invalid utf-8": (
        lambda t: (
            (t / "e.csv").write_bytes(
                (HEADER + GOOD).encode() + b"u\xff,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n"
            )
            and t / "e.csv"
        ),
        r"row 2: line 3 is not UTF-8",
    ),
    "duplicate header": (
        lambda t: csv_file(
            t, "u1,u2,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n", header="user_id," + HEADER
        ),
        r"two columns are named 'user_id' \(columns 1 and 2\)",
    ),
    "a quoted field over two lines, one field short": (
        lambda t: csv_file(t, GOOD + 'u2,flow_welcome_tour,,STARTED_FLOW,"2024-03-01\nT10:00:00Z"\n' + GOOD),
        r"row 2 \(line 3\) has 5 fields",
    ),
    "quote never closed": (
        lambda t: csv_file(t, GOOD + 'u2,flow_welcome_tour,,STARTED_FLOW,"2024-03-01T10:00:00Z,'),
        r"row 2: a quote opened on line 3 is never closed",
    ),
    "empty csv": (lambda t: csv_file(t, "", header=""), r"the file is empty"),
    "truncated parquet": (lambda t: _parquet(t, "e.parquet", cut=200), r"not a readable Parquet file"),
    "garbage parquet": (
        lambda t: (t / "g.parquet").write_bytes(b"PAR1 this is not parquet at all") and t / "g.parquet",
        r"not a readable Parquet file",
    ),
    "duplicate parquet column": (lambda t: _parquet(t, "d.parquet", dup=True), r"two columns are named 'user_id'"),
    "broken jsonl line": (
        lambda t: (
            (t / "e.jsonl").write_text(
                json.dumps({"user_id": "u1", "flow_slug": "flow_welcome_tour"}) + '\n{"user_id": "u2", "flow\n'
            )
            and t / "e.jsonl"
        ),
        r"row 2: line 2 is not valid JSON",
    ),
    "missing path": (lambda t: t / "nope.csv", r"file not found"),
    "a folder without exports": (
        lambda t: (t / "notes.md").write_text("no export here") and t,
        r"the folder holds no export file",
    ),
    "an unknown file type": (lambda t: (t / "e.xlsx").write_bytes(b"PK\x03\x04") and t / "e.xlsx", "unsupported"),
    "a truncated gzip": (
        lambda t: (t / "e.csv.gz").write_bytes(gzip.compress((HEADER + GOOD * 50).encode())[:60]) and t / "e.csv.gz",
        r"not a readable gzip file",
    ),
    "a glob that matches nothing": (lambda t: t / "*.csv", r"no file matches this pattern"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unreadable_exports_are_input_errors_naming_file_and_row(tmp_path: Path, case: str) -> None:
    make, message = CASES[case]
    path = make(tmp_path)
    mapping = resolve_mapping(None)
    with pytest.raises(InputError, match=message) as exc:
        check_exports([path], mapping)
    assert exc.value.file == str(path)
    # the pipeline refuses it the same way, whether or not the pre-flight check ran
    with pytest.raises(InputError, match=message):
        plan_exports([path], mapping, sample_catalog())


def test_a_jsonl_field_of_two_types_past_the_inferred_lines_quarantines_only_its_row(tmp_path: Path) -> None:
    """Issue 22: one odd row is that row's quarantine, not the file's refusal."""
    path = _two_types(tmp_path)
    mapping = resolve_mapping("mixpanel")
    check_exports([path], mapping)
    prepared = plan_exports([path], mapping, sample_catalog())
    assert accounting_closes(prepared.counts)
    assert prepared.counts["rows_in"] == 10_002
    assert prepared.plan.get_column("user_id").unique().to_list() == ["m1"]
    assert prepared.quarantine.select("source_row", "reason").rows() == [(10_002, "missing time")]


def test_quoted_separators_newlines_and_blank_lines_are_not_malformed(tmp_path: Path) -> None:
    body = (
        GOOD
        + '"u2","flow_welcome_tour","","STARTED_FLOW","2024-03-01T10:00:00Z","{""a"": ""x,y""}"\r\n'
        + "\n"
        + 'u3,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,"{""note"":\n""two, lines""}"\n'
    )
    path = csv_file(tmp_path, body)
    check_exports([path], resolve_mapping(None))
    prepared = run([path])
    assert sorted(prepared.plan.get_column("user_id").unique()) == ["u1", "u2", "u3"]
    # polars reads the blank line as a row without values: quarantined, and the accounting closes
    assert prepared.quarantine.get_column("reason").to_list() == ["missing time"]


def test_jsonl_data_of_mixed_types_is_read_and_judged_row_by_row(tmp_path: Path) -> None:
    row = {
        "user_id": "u1",
        "flow_slug": "flow_welcome_tour",
        "action": "STARTED_FLOW",
        "created_at": "2024-03-01T10:00:00Z",
    }
    # past the lines polars infers types from, as in a real export
    rows: list[dict[str, Any]] = [{**row, "data": {"a": 1}}] * 10_001 + [
        {**row, "user_id": "u2", "data": "text"},
        {**row, "user_id": "u3", "data": [1]},
    ]
    prepared = run([jsonl_file(tmp_path, rows)])
    assert reasons(prepared) == {"u2": "data is not a JSON object", "u3": "data is not a JSON object"}
    assert prepared.plan.get_column("data").to_list() == ['{"a": 1}']
    assert prepared.counts["rows_quarantined"] == 2
    sendable(prepared)


# ---------------------------------------------------------------- 3. nothing guessed silently


def test_a_step_map_entry_that_can_never_apply_is_refused_naming_the_entry(tmp_path: Path) -> None:
    """A step_map keyed by a flow the catalog lacks (a typo, or the vendor's id where the slug goes)
    would be ignored without a word, and a step the flow lacks would quarantine every row it maps."""
    pendo = csv_file(
        tmp_path,
        "v1,g1,s1,guideSeen,1709287200000\n",
        "p.csv",
        header="visitor_id,guide_id,guide_step_id,type,timestamp\n",
    )
    flow_map = {"flow_map": {"g1": "flow_welcome_tour"}}
    assert reasons(run([pendo], "pendo", {**flow_map, "step_map": {"flow_welcome_tour": {"s1": "welcome"}}})) == {}
    with pytest.raises(InputError) as typo:
        plan_exports(
            [pendo],
            resolve_mapping(
                "pendo", {**flow_map, "step_map": {"flow_welcom_tour": {"s1": "welcome"}}}, mapping_where="m.yaml"
            ),
            sample_catalog(),
        )
    assert str(typo.value) == (
        "file m.yaml, field 'step_map': step_map names flow 'flow_welcom_tour', which the catalog does not have "
        "(did you mean 'flow_welcome_tour'?); step_map is keyed by Frigade flow slugs (after flow_map): "
        "fix or remove the entry"
    )
    with pytest.raises(
        InputError,
        match=r"maps 's1' to step 'welcom', which flow 'flow_welcome_tour' does not have "
        r"\(did you mean 'welcome'\?\); its steps: welcome, ",
    ):
        run([pendo], "pendo", {**flow_map, "step_map": {"flow_welcome_tour": {"s1": "welcom"}}})
    # by position, a step map's values are positions, not ids
    assert (
        reasons(
            run([pendo], "pendo", {**flow_map, "step_by": "index0", "step_map": {"flow_welcome_tour": {"s1": "0"}}})
        )
        == {}
    )


def test_epoch_units_mixed_up_are_quarantined_naming_the_mix_up(tmp_path: Path) -> None:
    t = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
    pendo = csv_file(
        tmp_path,
        f"v1,g1,s1,guideSeen,{t * 1000}\nv2,g1,s1,guideSeen,{t}\n",
        "pendo.csv",
        header="visitor_id,guide_id,guide_step_id,type,timestamp\n",
    )
    doc = {"flow_map": {"g1": "flow_welcome_tour"}, "step_map": {"flow_welcome_tour": {"s1": "welcome"}}}
    got = reasons(run([pendo], "pendo", doc))
    assert set(got) == {"v2"}
    assert got["v2"] == (
        "time before 2000-01-01T00:00:00Z (earliest_time): epoch seconds read as milliseconds "
        "(or ms as microseconds)? check time_format"
    )
    mixpanel = jsonl_file(
        tmp_path,
        [
            {"event": "flow_started", "properties": {"distinct_id": "m1", "time": t, "flow_id": "flow_announcement"}},
            {
                "event": "flow_started",
                "properties": {"distinct_id": "m2", "time": t * 1000, "flow_id": "flow_announcement"},
            },
        ],
    )
    got = reasons(run([mixpanel], "mixpanel"))
    assert set(got) == {"m2"}
    assert "epoch milliseconds read as seconds" in got["m2"]
    # the window is the mapping's to set
    assert reasons(run([pendo], "pendo", {**doc, "earliest_time": "1970-01-01T00:00:00Z"})) == {}
    future = (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    soon = csv_file(tmp_path, f"u9,flow_welcome_tour,,STARTED_FLOW,{future},\n", "soon.csv")
    assert reasons(run([soon])) == {}
    assert "time more than 1h in the future" in reasons(run([soon], None, {"max_future": "1h"}))["u9"]


def test_user_ids_are_used_as_written_unless_the_mapping_trims_them(tmp_path: Path) -> None:
    body = (
        GOOD
        + " u1,flow_welcome_tour,,COMPLETED_FLOW,2024-03-01T11:00:00Z,\n"
        + "u2 ,flow_announcement,,STARTED_FLOW,2024-03-01T10:00:00Z,\n"
    )
    path = csv_file(tmp_path, body)
    exact = run([path])
    assert sorted(exact.plan.get_column("user_id").unique()) == [" u1", "u1", "u2 "]
    assert exact.counts["user_ids_differing_by_whitespace"] == 2
    trimmed = run([path], None, {"trim_user_ids": True})
    assert sorted(trimmed.plan.get_column("user_id").unique()) == ["u1", "u2"]
    assert trimmed.counts["user_ids_differing_by_whitespace"] == 0


def test_pendo_anonymous_visitors_are_rejected_with_a_reason(tmp_path: Path) -> None:
    t = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * 1000
    path = csv_file(
        tmp_path,
        f"v1,g1,s1,guideSeen,{t}\n_PENDO_T_abc123,g1,s1,guideSeen,{t}\n",
        "pendo.csv",
        header="visitor_id,guide_id,guide_step_id,type,timestamp\n",
    )
    doc = {"flow_map": {"g1": "flow_welcome_tour"}, "step_map": {"flow_welcome_tour": {"s1": "welcome"}}}
    prepared = run([path], "pendo", doc)
    got = reasons(prepared)
    assert list(got) == ["_PENDO_T_abc123"]
    assert got["_PENDO_T_abc123"].startswith("anonymous user id (reject_users")
    assert prepared.plan.get_column("user_id").unique().to_list() == ["v1"]


# ---------------------------------------------------------------- 4. source rules


CHAMELEON_HEADER = "id,profile.uid,tour_id,state,created_at,updated_at\n"


@pytest.mark.parametrize("later_first", [False, True])
def test_a_state_re_exported_by_overlapping_windows_ends_in_its_latest_copy(tmp_path: Path, later_first: bool) -> None:
    older = "i1,p1,t1,completed,2024-03-01T10:00:00Z,2024-03-05T10:00:00Z\n"
    newer = "i1,p1,t1,exited,2024-03-01T10:00:00Z,2024-03-09T10:00:00Z\n"
    other_old = "i2,p2,t1,started,2024-03-01T10:00:00Z,2024-03-02T10:00:00Z\n"
    other_new = "i2,p2,t1,completed,2024-03-01T10:00:00Z,2024-03-04T10:00:00Z\n"
    a = csv_file(tmp_path, older + other_old, "window-a.csv", CHAMELEON_HEADER)
    b = csv_file(tmp_path, newer + other_new, "window-b.csv", CHAMELEON_HEADER)
    prepared = run([b, a] if later_first else [a, b], "chameleon", {"flow_map": {"t1": "flow_announcement"}})
    flows = prepared.expected_flows.sort("user_id")
    assert flows.select("user_id", "completed", "skipped").rows() == [("p1", False, True), ("p2", True, False)]
    assert prepared.counts["rows_redundant"] >= 2


def test_frigade_csv_repeated_users_take_their_latest_row(tmp_path: Path) -> None:
    header = "User ID,Status,Current Step,Last Updated\n"
    rows = "u1,Completed,,2024-03-05T10:00:00Z\nu1,In Progress,sidebar,2024-03-09T10:00:00Z\n"
    prepared = run([csv_file(tmp_path, rows, "f.csv", header)], "frigade-csv", {"flow_constant": "flow_welcome_tour"})
    flow = prepared.expected_flows.row(0, named=True)
    assert (flow["started"], flow["completed"]) == (True, False)


def test_wide_lists_split_on_every_documented_separator(tmp_path: Path) -> None:
    header = "id,completed_tours\n"
    rows = (
        "w1,flow_welcome_tour;flow_announcement\n"
        'w2,"[""flow_welcome_tour"",""flow_announcement""]"\n'
        'w3,"{flow_welcome_tour,flow_announcement}"\n'
        'w4,"flow_welcome_tour, flow_announcement"\n'
    )
    doc = {"default_time": "2024-03-01T00:00:00Z"}
    prepared = run([csv_file(tmp_path, rows, "w.csv", header)], "wide", doc)
    assert prepared.quarantine.is_empty()
    done = prepared.expected_flows.filter(pl.col("completed")).group_by("user_id").len().sort("user_id")
    assert done.rows() == [("w1", 2), ("w2", 2), ("w3", 2), ("w4", 2)]
