"""run.json as a typed record: written as it was, read back typed, tolerant of other versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lifecycle.record import Attempt, RunRecord
from lifecycle.runfolder import RunFolder


def test_a_record_says_only_what_happened_and_reads_back_the_same(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    record = RunRecord(run_id="r1", kind="backfill", status="planned", counts={"rows_in": 3})
    record.attempts = [Attempt(attempt=1, started_at="2026-12-01T00:00:00+00:00")]
    folder.write_record(record)
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc == {
        "run_id": "r1",
        "kind": "backfill",
        "counts": {"rows_in": 3},
        "status": "planned",
        "attempts": [{"attempt": 1, "started_at": "2026-12-01T00:00:00+00:00", "stopped_by": None}],
        # a planned run says where its state is remembered, null when nowhere
        "state_dir": None,
        "state_target": None,
    }
    again = folder.read_record()
    assert again == record
    assert again.attempts[0].stopped_by is None


def test_a_record_of_another_version_reads_with_the_fields_it_has(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "old", "status": "stopped", "retired_field": 1}))
    record = RunFolder(tmp_path).read_record()
    assert (record.run_id, record.status, record.stopped) == ("old", "stopped", True)
    assert record.attempts == []


def test_an_empty_folder_has_an_empty_record(tmp_path: Path) -> None:
    assert RunFolder(tmp_path).read_record() == RunRecord()


def test_a_status_is_one_of_the_documented_ones() -> None:
    record = RunRecord()
    with pytest.raises(ValidationError):
        record.status = "done"  # type: ignore[assignment]
