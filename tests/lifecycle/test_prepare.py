"""A resume finishes the plan in its folder: under the settings that made it, and no others."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from emulator.sample import sample_catalog
from lifecycle.job import Job
from lifecycle.prepare import analyze_run
from lifecycle.record import RunRecord
from lifecycle.runfolder import RunFolder, file_digest
from lifecycle.settings import Settings
from transforms.schema import InputError


def planned_folder(tmp_path: Path, settings: Settings) -> tuple[Path, RunFolder]:
    export = tmp_path / "e.csv"
    export.write_text("user_id,flow_slug,step_id,action,created_at\n")
    folder = RunFolder(tmp_path / "run")
    folder.create()
    folder.write_parquet("plan.parquet", pl.DataFrame({"request_id": ["u|f|0"]}))
    folder.write_record(
        RunRecord(run_id="run", status="stopped", settings=settings.public(), inputs=[file_digest(export)])
    )
    return export, folder


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"mode": "history"}, "mode 'state'"),
        ({"preset": "appcues"}, "preset None"),
        ({"send_created_at": False}, "send_created_at True"),
    ],
)
def test_a_resume_under_other_plan_settings_is_refused(tmp_path: Path, changed: dict[str, object], named: str) -> None:
    export, folder = planned_folder(tmp_path, Settings.resolve({}, env={}))
    job = Job([export], Settings.resolve(changed, env={}), folder)
    job.run = folder.read_record()
    with pytest.raises(InputError, match=rf"was planned with {named}; resume it with the same settings"):
        analyze_run(job, sample_catalog())


def test_a_resume_may_change_the_rate_and_keeps_its_plan(tmp_path: Path) -> None:
    export, folder = planned_folder(tmp_path, Settings.resolve({}, env={}))
    job = Job([export], Settings.resolve({"rate": 400, "concurrency": 64}, env={}), folder)
    job.run = folder.read_record()
    job.run.rules = None  # planned before rules profiles were recorded: the plan is kept as it is
    assert analyze_run(job, sample_catalog()) is None
