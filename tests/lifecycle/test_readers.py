"""What the job reads (``lifecycle.readers``): every container and place gives the same rows and the
same file:row refusals as the plain file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from emulator.sample import sample_catalog
from lifecycle.exports import check_exports, estimated_rows, plan_exports, sources_of
from lifecycle.readers import open_exports
from transforms.analysis import Prepared
from transforms.presets import resolve_mapping
from transforms.schema import InputError

HEADER = "user_id,flow_slug,step_id,action,created_at,data\n"
ROWS = "".join(
    f"u{i},flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:0{i % 10}Z,\n"
    f"u{i},flow_welcome_tour,,COMPLETED_FLOW,2024-03-01T11:00:0{i % 10}Z,\n"
    for i in range(20)
)
EVENT: dict[str, Any] = {"user_id": "u1", "flow_slug": "flow_welcome_tour", "action": "STARTED_FLOW"}


def plan(paths: list[Path], doc: dict[str, Any] | None = None) -> Prepared:
    mapping = resolve_mapping(None, doc)
    check_exports(paths, mapping)
    return plan_exports(paths, mapping, sample_catalog())


def same_plan(a: Prepared, b: Prepared) -> None:
    cols = ["user_id", "flow_slug", "seq"]
    assert a.plan.height > 0
    assert a.plan.sort(cols).select(cols).equals(b.plan.sort(cols).select(cols))
    assert a.counts == b.counts


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_a_gzipped_csv_plans_as_the_plain_file(tmp_path: Path) -> None:
    plain = tmp_path / "e.csv"
    plain.write_text(HEADER + ROWS)
    packed = tmp_path / "e.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    same_plan(plan([packed]), plan([plain]))
    assert [s.name for s in sources_of([packed])] == [str(packed)]
    assert abs(estimated_rows([packed]) - 40) <= 2


def test_a_gzip_whose_name_says_nothing_of_its_format_is_read_by_its_content(tmp_path: Path) -> None:
    """Segment's S3 logs: ``<received>.<uuid>.gz`` of JSON lines."""
    rows = [
        {**EVENT, "created_at": "2024-03-01T10:00:00Z"},
        {**EVENT, "user_id": "u2", "created_at": "2024-03-01T10:00:01Z"},
    ]
    seg = tmp_path / "1709287200000.0d2f4a1c-5b9e.gz"
    seg.write_bytes(gzip.compress(jsonl(rows)))
    assert sorted(plan([seg]).plan.get_column("user_id").unique()) == ["u1", "u2"]


def test_a_bad_row_inside_a_gzip_is_named_by_the_gzip_and_its_row(tmp_path: Path) -> None:
    packed = tmp_path / "e.csv.gz"
    packed.write_bytes(gzip.compress((HEADER + ROWS + "u9,flow_welcome_tour,STARTED_FLOW\n").encode()))
    with pytest.raises(InputError, match=r"row 41 \(line 42\) has 3 fields") as exc:
        plan([packed])
    assert exc.value.file == str(packed)
    assert exc.value.row == 41


def test_a_gzipped_file_read_twice_is_decompressed_once(tmp_path: Path) -> None:
    packed = tmp_path / "e.jsonl.gz"
    packed.write_bytes(gzip.compress(jsonl([{**EVENT, "created_at": "2024-03-01T10:00:00Z"}])))
    first, again = open_exports([packed]), open_exports([packed])
    assert first[0].local == again[0].local != packed
    assert first[0].scan().collect().height == 1


# ---------------------------------------------------------------- JSON documents and nested fields


def events(n: int, user: str = "u") -> list[dict[str, Any]]:
    return [
        {**EVENT, "user_id": f"{user}{i}", "created_at": f"2024-03-01T10:00:{i:02d}Z", "action": action}
        for i in range(n)
        for action in ("STARTED_FLOW", "COMPLETED_FLOW")
    ]


def test_a_json_array_pretty_or_compact_plans_as_json_lines(tmp_path: Path) -> None:
    lines = tmp_path / "e.jsonl"
    lines.write_bytes(jsonl(events(5)))
    pretty, compact = tmp_path / "pretty.json", tmp_path / "compact.json"
    pretty.write_text(json.dumps(events(5), indent=2))
    compact.write_text(json.dumps(events(5)))
    same_plan(plan([pretty]), plan([lines]))
    same_plan(plan([compact]), plan([lines]))


def test_an_api_envelope_is_read_from_its_one_list_of_records_and_pages_are_files(tmp_path: Path) -> None:
    """Pendo's aggregation response, Chameleon's pages: the records under a key, beside a cursor."""
    lines = tmp_path / "e.jsonl"
    lines.write_bytes(jsonl(events(6)))
    pages = []
    for n, part in enumerate((events(6)[:7], events(6)[7:])):
        page = tmp_path / f"page-{n}.json"
        page.write_text(json.dumps({"startTime": 1709251200000, "results": part, "cursor": f"c{n}"}, indent=n))
        pages.append(page)
    same_plan(plan(pages), plan([lines]))


def test_the_records_path_names_the_list_when_a_document_holds_several(tmp_path: Path) -> None:
    doc = tmp_path / "e.json"
    doc.write_text(json.dumps({"meta": {"users": [{"id": "x"}]}, "data": {"events": events(3)}}))
    with pytest.raises(InputError, match=r"several lists of records \(meta.users, data.events\)") as exc:
        plan([doc])
    assert exc.value.file == str(doc)
    assert "records: KEY" in str(exc.value)
    assert plan([doc], {"records": "data.events"}).counts["rows_in"] == 6
    with pytest.raises(InputError, match=r"no records at 'data.evts': data has no key 'evts' \(keys: events\)"):
        plan([doc], {"records": "data.evts"})


def test_a_bad_record_in_a_document_is_named_by_its_row(tmp_path: Path) -> None:
    doc = tmp_path / "e.json"
    doc.write_text(json.dumps({"results": [*events(2), "not an object"]}, indent=2))
    with pytest.raises(InputError, match="line 5 is not a JSON object") as exc:
        plan([doc])
    assert (exc.value.file, exc.value.row) == (str(doc), 5)


def test_nested_fields_are_read_by_dotted_paths_in_json_and_in_parquet_structs(tmp_path: Path) -> None:
    """Chameleon's ``profile.uid``, Userflow's ``attributes.flow_id``: any mapping column may be a path."""
    nested = [
        {
            "profile": {"uid": r["user_id"]},
            "attributes": {"flow_id": r["flow_slug"], "meta": {"action": r["action"]}},
            "time": r["created_at"],
        }
        for r in events(4)
    ]
    doc = {"user": "profile.uid", "flow": "attributes.flow_id", "action": "attributes.meta.action", "time": "time"}
    page = tmp_path / "interactions.json"
    page.write_text(json.dumps({"interactions": nested, "cursor": None}, indent=2))
    table = tmp_path / "e.parquet"
    pl.DataFrame(nested).write_parquet(table)
    assert isinstance(pl.read_parquet(table).schema["profile"], pl.Struct)
    flat = tmp_path / "e.jsonl"
    flat.write_bytes(jsonl(events(4)))
    same_plan(plan([page], doc), plan([flat]))
    same_plan(plan([table], doc), plan([flat]))
