"""A run as a scheduled job or a redirected command sees it: progress lines in a log that is not a
terminal, and a sync that finds its previous run unfinished. Real emulator processes on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import cli, free_port
from tests.e2e.test_backfill_e2e import CATALOG_PATH, assert_state, write_sample
from tests.e2e.test_outages_e2e import accepted, output, start_cli, wait_until

pytestmark = pytest.mark.slow


def test_a_redirected_run_logs_its_progress_at_each_stage_and_every_interval(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    write_sample(export, users=12, seed=61)
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        env = {**prefect_env, "FRIGADE_API_KEY": emu.public_key, "FRIGADE_MIGRATE_PROGRESS_EVERY": "0.5"}
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
        # captured output is a pipe, as under nohup, cron or a Prefect worker: no bar, lines
        res = cli([*args, "--run-dir", str(tmp_path / "run"), "--rate", "15"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    log = res.stderr.splitlines()
    planned = next(line for line in log if line.startswith("plan: ") and "requests planned" in line)
    total = int(re.search(r"plan: (\d+) requests", planned).group(1))  # type: ignore[union-attr]
    assert total > 15, "too few requests to see the push go by"
    pushes = [line for line in log if line.startswith("push: ") and " req " in line]
    done = [int(line.split()[1].split("/")[0]) for line in pushes]
    assert done[0] == 0
    assert done[-1] == total
    assert len(pushes) >= 4, log  # at 15/s that is a line at start, at the end and every half second
    assert done == sorted(done)
    assert pushes[-1].split()[3] == "12/12", pushes[-1]  # users done / total
    for field in ("/s (limit 15)", "ETA", "errors 0"):
        assert field in pushes[-1]
    assert log.index(planned) < log.index(pushes[0])
    assert any(line.startswith("finish: the run succeeded, exit code 0") for line in log)
    assert "\x1b[" not in res.stderr, "terminal escapes in a log"


def test_a_sync_after_an_unfinished_one_resumes_it_first_or_says_how_to_go_on(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=10, seed=71)
    port, db = free_port(), tmp_path / "emulator.db"
    env = {**prefect_env, "FRIGADE_API_URL": f"http://127.0.0.1:{port}", "FRIGADE_API_KEY": "api_public_emulator"}
    # a run as a schedule starts it: no --run-dir, the default state folder, the project folder as cwd
    sync = ["sync", str(export), "--catalog", str(CATALOG_PATH), "--rate", "400"]
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db, port=port) as emu:
        # the scheduler stops it part-way (SIGTERM, as a worker's shutdown does)
        proc = start_cli([*sync[:-1], "5"], env, tmp_path)
        try:
            wait_until(lambda: accepted(emu) >= 5, proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 130, output(tmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()
    (first,) = (tmp_path / "runs").iterdir()

    # the export changed meanwhile: the stopped sync cannot be resumed as it was; one line says how on
    original = export.read_bytes()
    export.write_bytes(original + original.splitlines(keepends=True)[-1])
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db, port=port) as emu:
        before = emu.stats()["writes_accepted"]
        changed = cli(sync, env, tmp_path)
        assert changed.returncode == 2, changed.stdout + changed.stderr
        assert f"the sync in runs/{first.name} did not finish, and its exports have changed" in changed.stderr
        assert "from_current: true" in changed.stderr
        assert emu.stats()["writes_accepted"] == before

        # the export as it was: the next scheduled sync finishes the stopped one, then syncs
        export.write_bytes(original)
        res = cli(sync, env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"the sync in runs/{first.name} did not finish: resuming it first" in res.stderr
        stats = emu.stats()
        assert stats["writes_unchanged"] == 0, "a write was sent twice"
        assert_state(emu, expected)
    assert json.loads((first / "run.json").read_text())["status"] == "succeeded"
    # the stopped one and this one: the refused one left no folder
    assert len(list((tmp_path / "runs").iterdir())) == 2
    (state,) = (tmp_path / "state").iterdir()
    assert not (state / "unfinished.json").exists()
