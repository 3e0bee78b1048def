"""The outcome log writes each outcome's fields under their own names, whatever order they are kept in."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

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
