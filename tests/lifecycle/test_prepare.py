"""A resume finishes the plan in its folder: under the settings that made it, and no others."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from emulator.sample import sample_catalog
from lifecycle.job import Job
from lifecycle.prepare import analyze_run, refuse_history_onto_state
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


def test_history_mode_refuses_to_replay_onto_users_with_state_under_merge() -> None:
    with pytest.raises(InputError, match=r"3 of the export.s users already have state.*--mode state.*overwrite"):
        refuse_history_onto_state("history", "merge", 3)
    # nothing to undo, or the export is meant to win, or the merge applies: no refusal
    refuse_history_onto_state("history", "merge", 0)
    refuse_history_onto_state("history", "overwrite", 3)
    refuse_history_onto_state("state", "merge", 3)


def test_the_plan_preview_samples_users_by_a_hash_of_the_id_not_the_oldest() -> None:
    from lifecycle.existing import sampled_users
    from transforms.sync import StateFrames

    ids = [f"user-{i:05d}" for i in range(1000)]
    flows = pl.DataFrame({"user_id": ids, "flow_slug": ["f"] * len(ids)})
    whole = StateFrames(flows, pl.DataFrame({"user_id": ids, "flow_slug": ["f"] * len(ids)}))
    picked = sampled_users(whole, 100).flows["user_id"].to_list()
    assert len(picked) == 100
    assert sum(u >= ids[500] for u in picked) > 20, "the sample is the oldest ids"
    # a sample of each half's samples is the whole's sample (how shards preview)
    halves = [StateFrames(*(f.slice(o, 500) for f in whole)) for o in (0, 500)]
    parts = [sampled_users(h, 100) for h in halves]
    joined = StateFrames(*(pl.concat(fs) for fs in zip(*parts, strict=True)))
    assert sorted(sampled_users(joined, 100).flows["user_id"].to_list()) == sorted(picked)


def test_reads_hand_on_whole_users_in_frames_and_give_the_same_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The existing state is read into frames of a few thousand rows, never one dict per row of
    every user at once; read in small frames it is the same state as read in one."""
    import asyncio

    from polars.testing import assert_frame_equal

    from frigade.models import UserFlowStates
    from lifecycle import prepare
    from transforms.sync import from_snapshot

    flows = [
        {
            "flowSlug": f"flow-{f}",
            "$state": {
                "started": True,
                "completed": f == 1,
                "skipped": False,
                "visible": True,
                "currentStepIndex": 1,
                "currentStepId": "b",
                "lastActionAt": None,
            },
            "data": {
                "steps": [
                    {"id": s, "$state": {"started": True, "completed": s == "a", "skipped": False}}
                    for s in ("a", "b", "c")
                ]
            },
        }
        for f in range(2)
    ]

    class Reader:
        async def read_state(self, user_id: str) -> UserFlowStates:
            return UserFlowStates.model_validate({"eligibleFlows": flows})

    users = [f"u{i:03d}" for i in range(50)]
    whole = asyncio.run(prepare.read_snapshot(Reader(), users, 4))  # type: ignore[arg-type]
    monkeypatch.setattr(prepare, "_ROWS_PER_FRAME", 7)
    parts: list[pl.DataFrame] = []
    asyncio.run(prepare._read_states(Reader(), users, 4, parts.append))  # type: ignore[arg-type]
    assert len(parts) > 10
    assert all(p["user_id"].n_unique() * 6 == p.height for p in parts)
    current = asyncio.run(prepare.read_current(Reader(), users, 4))  # type: ignore[arg-type]
    expected = from_snapshot(whole)
    for got, want in zip(current, expected, strict=True):
        key = [c for c in ("user_id", "flow_slug", "step_id") if c in want.columns]
        assert_frame_equal(got.sort(key), want.sort(key))
