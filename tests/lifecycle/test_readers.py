"""What the job reads (``lifecycle.readers``): every container and place gives the same rows and the
same file:row refusals as the plain file."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.fs as pafs
import pytest

from emulator.sample import sample_catalog
from lifecycle.exports import check_exports, estimated_rows, plan_exports, sources_of
from lifecycle.readers import open_exports
from tests.e2e.servers import free_port, stop_group
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


def plan(paths: Sequence[Path | str], doc: dict[str, Any] | None = None) -> Prepared:
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
    with pytest.raises(InputError, match="record 5 is not a JSON object") as exc:
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


# ---------------------------------------------------------------- archives, folders, globs, buckets


def amplitude_zip(path: Path, hours: list[bytes], extra: dict[str, bytes] | None = None) -> Path:
    """Amplitude's export: a zip of one gzipped JSON-lines file per hour, under the project's id."""
    with zipfile.ZipFile(path, "w") as archive:
        for hour, lines in enumerate(hours):
            archive.writestr(f"123456/123456_2024-03-01_{hour}#0.json.gz", gzip.compress(lines))
        for name, body in (extra or {}).items():
            archive.writestr(name, body)
    return path


def test_a_zip_of_gzipped_json_lines_plans_as_its_rows_and_names_each_member(tmp_path: Path) -> None:
    rows = events(6)
    flat = tmp_path / "e.jsonl"
    flat.write_bytes(jsonl(rows))
    archive = amplitude_zip(
        tmp_path / "export.zip", [jsonl(rows[:5]), jsonl(rows[5:])], {"__MACOSX/._x": b"\0\1", "README": b"?"}
    )
    same_plan(plan([archive]), plan([flat]))
    assert [s.name for s in sources_of([archive])] == [
        f"{archive}!123456/123456_2024-03-01_0#0.json.gz",
        f"{archive}!123456/123456_2024-03-01_1#0.json.gz",
    ]


def test_a_bad_row_in_an_archive_names_the_member_and_its_row(tmp_path: Path) -> None:
    rows = events(3)
    archive = amplitude_zip(tmp_path / "export.zip", [jsonl(rows), jsonl(rows[:2]) + b'{"user_id": "u9", "fl\n'])
    inner = tmp_path / "outer.zip"
    with zipfile.ZipFile(inner, "w") as outer:
        outer.write(archive, "2024/export.zip")
    member = f"{inner}!2024/export.zip!123456/123456_2024-03-01_1#0.json.gz"
    with pytest.raises(InputError, match=r"line 3 is not valid JSON") as exc:
        plan([inner])
    assert (exc.value.file, exc.value.row) == (member, 3)
    assert str(exc.value).startswith(f"file {member}, row 3")


def test_a_folder_is_every_export_in_it_at_any_depth_and_a_glob_its_matches(tmp_path: Path) -> None:
    """Segment's S3 logs copied down: ``segment-logs/<source>/<day>/<time>.<uuid>.gz``."""
    rows = events(6)
    flat = tmp_path / "e.jsonl"
    flat.write_bytes(jsonl(rows))
    logs = tmp_path / "segment-logs" / "src"
    for day, part in (("2024-03-01", rows[:4]), ("2024-03-02", rows[4:])):
        (logs / day).mkdir(parents=True)
        (logs / day / f"17092{day[-1]}.0d2f-4a1c.gz").write_bytes(gzip.compress(jsonl(part)))
    (logs / "2024-03-01" / "manifest.md").write_text("not an export")
    (logs / ".DS_Store").write_bytes(b"\0")
    same_plan(plan([tmp_path / "segment-logs"]), plan([flat]))
    assert len(sources_of([tmp_path / "segment-logs"])) == 2
    same_plan(plan([tmp_path / "segment-logs/**/*.gz"]), plan([flat]))
    with pytest.raises(InputError, match="no file matches this pattern"):
        plan([tmp_path / "segment-logs/**/*.csv"])


def test_an_azure_address_without_its_account_is_refused_saying_how_to_name_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(InputError, match="set AZURE_STORAGE_ACCOUNT_NAME, or give abfs://") as exc:
        open_exports([Path("az://exports/amplitude")])
    assert exc.value.file == "az://exports/amplitude"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """An S3-compatible server (moto) on 127.0.0.1, its bucket ``exports``; yields the URI query that
    points pyarrow at it. Stopped by its own pid."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    try:
        query = f"?endpoint_override=127.0.0.1:{port}&scheme=http"
        deadline = time.monotonic() + 60
        while True:
            try:
                fs, _ = pafs.FileSystem.from_uri(f"s3://exports{query}&allow_bucket_creation=true")
                fs.create_dir("exports")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield query
    finally:
        stop_group(proc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_an_s3_prefix_is_every_export_object_under_it(tmp_path: Path, s3: str) -> None:
    rows = events(6)
    flat = tmp_path / "e.jsonl"
    flat.write_bytes(jsonl(rows))
    fs, _ = pafs.FileSystem.from_uri(f"s3://exports{s3}")
    for day, part in (("2024-03-01", rows[:4]), ("2024-03-02", rows[4:])):
        with fs.open_output_stream(f"exports/segment-logs/src/{day}/1709.{day}.gz") as out:
            out.write(gzip.compress(jsonl(part)))
    with fs.open_output_stream("exports/segment-logs/src/notes.md") as out:
        out.write(b"not an export")
    prefix = f"s3://exports/segment-logs{s3}"
    same_plan(plan([prefix]), plan([flat]))
    # as a run gets it, after pathlib has folded the // of the address
    assert [s.name for s in sources_of([Path(prefix)])] == [
        "s3://exports/segment-logs/src/2024-03-01/1709.2024-03-01.gz",
        "s3://exports/segment-logs/src/2024-03-02/1709.2024-03-02.gz",
    ]
    with pytest.raises(InputError, match="no export file at this address") as exc:
        plan([f"s3://exports/nothing-here{s3}"])
    assert exc.value.file == "s3://exports/nothing-here"
    with pytest.raises(InputError, match=r"cannot be listed|no export file at this address") as exc:
        plan([f"s3://no-such-bucket/logs{s3}"])
    assert exc.value.file == "s3://no-such-bucket/logs"


# ---------------------------------------------------------------- one odd row


@pytest.mark.parametrize("odd", [[1, 2], 7, "text", True])
@pytest.mark.parametrize("container", ["jsonl", "json document"])
def test_a_field_of_another_kind_on_one_row_quarantines_that_row_only(tmp_path: Path, odd: Any, container: str) -> None:
    """Issue 22: ``attributes`` is an object on every row but one (a list, a number, text): that row is
    quarantined, the file is read."""
    rows = [
        {
            "user_id": r["user_id"],
            "attributes": {"flow_id": r["flow_slug"]},
            "event": r["action"],
            "time": r["created_at"],
        }
        for r in events(4)
    ]
    rows[3] = {**rows[3], "attributes": odd}
    path = tmp_path / ("e.jsonl" if container == "jsonl" else "e.json")
    path.write_bytes(jsonl(rows) if container == "jsonl" else json.dumps({"data": rows}, indent=1).encode())
    prepared = plan([path], {"flow": ["attributes.flow_slug", "attributes.flow_id"], "action": "event", "time": "time"})
    assert prepared.counts["rows_in"] == 8
    assert prepared.quarantine.select("source_row", "user_id", "reason").rows() == [(4, "u1", "missing flow")]
    assert sorted(prepared.plan.get_column("user_id").unique()) == ["u0", "u1", "u2", "u3"]
