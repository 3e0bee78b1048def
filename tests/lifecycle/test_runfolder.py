"""The outcome log writes each outcome's fields under their own names, whatever order they are kept in;
a file written frame by frame is whole or not there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

import polars as pl
import pytest

from frigade.push import Outcome
from lifecycle.runfolder import OUTCOME_SCHEMA, OutcomeLog, RunFolder


def test_an_outcome_reads_back_field_for_field_with_its_attempt(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.create()
    log = OutcomeLog(folder, 3)
    full = Outcome("r-1", "u 1", "flow", 2, 500, 4, False, "AmbiguousError", "gave up", "failed", 1.5)
    bare = Outcome("r-2", "u 2", "tour", 0, None, 0, True, None, None, "already_in_effect", 2.25)
    log.add(full)
    log.add(bare)
    log.flush()
    rows = folder.outcomes().to_dicts()
    assert rows == [asdict(full) | {"attempt": 3}, asdict(bare) | {"attempt": 3}]
    assert list(OUTCOME_SCHEMA) == [f.name for f in fields(Outcome)] + ["attempt"]
    assert log.counts == {"failed": 1, "already_in_effect": 1}


def test_a_file_written_frame_by_frame_is_the_frames_in_order_and_replaces_the_old_only_once_whole(
    tmp_path: Path,
) -> None:
    folder = RunFolder(tmp_path)
    schema: dict[str, pl.DataType] = {"user_id": pl.String(), "n": pl.Int64()}
    folder.write_parquet("x.parquet", pl.DataFrame({"user_id": ["old"], "n": [0]}))
    frames = [pl.DataFrame({"n": [i, i + 1], "user_id": [f"u{i}", f"u{i + 1}"], "extra": [1, 2]}) for i in (1, 3)]

    def failing() -> Iterator[pl.DataFrame]:
        yield frames[0]
        raise RuntimeError("a bucket failed")

    with pytest.raises(RuntimeError):
        folder.write_parquet_frames("x.parquet", failing(), schema)
    assert folder.read_parquet("x.parquet")["user_id"].to_list() == ["old"]
    folder.write_parquet_frames("x.parquet", iter(frames), schema)
    assert folder.read_parquet("x.parquet").to_dict(as_series=False) == {
        "user_id": ["u1", "u2", "u3", "u4"],
        "n": [1, 2, 3, 4],
    }
    folder.write_parquet_frames("x.parquet", iter([]), schema)
    assert folder.read_parquet("x.parquet").schema == pl.Schema(schema)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]
