"""Sharded runs over real HTTP to an emulator process: killed and resumed exactly, synced shard by shard."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import cli
from tests.e2e.test_backfill_e2e import CATALOG_PATH, assert_state, write_sample

pytestmark = pytest.mark.slow


@pytest.fixture
def slow_emulator() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(catalog=CATALOG_PATH, latency_ms=20) as emu:
        yield emu


def _planned(run: Path) -> int:
    return sum(pl.read_parquet(p).height for p in sorted(run.glob("shards/*/plan.parquet")))


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_sharded_run_then_resume_sends_nothing_twice(
    slow_emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path, workers: int
) -> None:
    """Killed (the run's process and its workers) while shards are being pushed, then resumed: every
    user ends exactly at the export's state and no write is sent twice."""
    emu = slow_emulator
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=150, seed=23)
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "cli.app", "backfill", str(export), "--catalog", str(CATALOG_PATH)]
    args += ["--api-url", emu.url, "--run-dir", str(run_dir), "--rate", "80", "--concurrency", "8", "--shards", "3"]
    args += ["--workers", str(workers)]
    env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emu.public_key}
    proc = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        # one shard's worth sent and more: on one worker inside the second shard, on two inside both
        first = 0
        while not first or emu.stats()["writes_accepted"] < first + 100:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
            if (
                not first
                and (run_dir / "run.json").exists()
                and json.loads((run_dir / "run.json").read_text()).get("status")
            ):
                first = pl.read_parquet(run_dir / "shards/000/plan.parquet").height
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    planned = _planned(run_dir)
    assert emu.stats()["writes_accepted"] < planned, "the kill came too late to test anything"
    shard_status = [json.loads(p.read_text()).get("status") for p in sorted(run_dir.glob("shards/*/run.json"))]
    assert "pushing" in shard_status, shard_status
    assert shard_status[-1] != "succeeded", shard_status

    # resumed without --shards: the folder's own count
    resume = [a for i, a in enumerate(args) if a != "--shards" and args[i - 1] != "--shards"]
    res = subprocess.run(resume, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_state(emu, expected)
    stats = emu.stats()
    assert stats["writes_unchanged"] == 0, "a write was sent twice"
    assert stats["writes_accepted"] == planned
    run = json.loads((run_dir / "run.json").read_text())
    assert run["shards"] == 3
    assert run["status"] == "succeeded"
    assert run["mismatches"] == 0
    assert len(run["attempts"]) == 2
    # requests the kill left unacknowledged were read back as landed (resolved_applied), not resent
    assert set(run["outcomes"]) <= {"sent", "resolved_applied", "already_in_effect"}, run["outcomes"]
    assert sum(run["outcomes"].values()) == planned
    assert run["accounting_closes"] is True
    assert run["counts"]["requests_planned"] == planned
    assert run["users_matching"] == len({u for u, _ in expected})
    snapshot = pl.read_parquet(run_dir / "snapshot.parquet")
    assert set(snapshot["user_id"].unique().to_list()) == {u for u, _ in expected}
    assert "rows in" in (run_dir / "report.md").read_text()


def test_sharded_syncs_remember_every_shard(prefect_env: dict[str, str], tmp_path: Path) -> None:
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emulator:
        _sharded_syncs(emulator, prefect_env, tmp_path)


def _sharded_syncs(emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=60, seed=5)
    env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emulator.public_key}

    def sync(run: str) -> dict[str, object]:
        args = ["sync", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emulator.url, "--rate", "400"]
        args += ["--state-dir", str(tmp_path / "state"), "--run-dir", str(tmp_path / run), "--shards", "4"]
        res = cli(args, env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        doc: dict[str, object] = json.loads((tmp_path / run / "run.json").read_text())
        return doc

    first = sync("s1")
    assert_state(emulator, expected)
    assert first["status"] == "succeeded"
    again = sync("s2")
    counts = again["counts"]
    assert isinstance(counts, dict)
    assert counts["requests_planned"] == 0
    assert counts["users_unchanged"] == len({u for u, _ in expected})
    assert emulator.stats()["writes_unchanged"] == 0


def test_sharded_backfill_on_two_dask_workers_stays_within_the_throttle(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """Four shards pushed by a Dask LocalCluster of two worker processes, each shard with its own
    client, against an emulator that answers 429 above 40 requests in any second: the run's budget is
    divided, never multiplied, so not one request is throttled."""
    rate = 40
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=80, seed=31)
    with EmbeddedEmulator(catalog=CATALOG_PATH, latency_ms=20, rate_limit=rate) as emu:
        env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emu.public_key}
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url, "--rate", str(rate)]
        args += ["--run-dir", str(tmp_path / "run"), "--shards", "4", "--workers", "2"]
        res = cli(args, env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert_state(emu, expected)
        stats = emu.stats()
    run_dir = tmp_path / "run"
    planned = _planned(run_dir)
    assert stats["throttled"] == 0, stats
    assert stats["requests_by_status"].get("429", 0) == 0, stats
    assert stats["max_requests_per_second_window"] <= rate, stats
    assert stats["writes_unchanged"] == 0, "a write changed nothing"
    assert stats["writes_accepted"] == planned
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "succeeded"
    assert run["outcomes"] == {"sent": planned}
    assert run["mismatches"] == 0
    # every shard was pushed from a worker: each says so in one line, none drew a bar
    assert sorted(re.findall(r"shard (\d)/4: succeeded", res.stderr)) == ["1", "2", "3", "4"]


def test_ctrl_c_stops_every_worker_then_resume_finishes(
    slow_emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """A Ctrl-C (SIGINT to the terminal's process group, workers included) ends the run as an
    interrupt, exit 130, with the resume command; the workers ignore the signal and stop through the
    run's budget, after flushing what they did; the resume finishes exactly."""
    emu = slow_emulator
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=150, seed=29)
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "cli.app", "backfill", str(export), "--catalog", str(CATALOG_PATH)]
    args += ["--api-url", emu.url, "--run-dir", str(run_dir), "--rate", "60", "--shards", "3", "--workers", "2"]
    env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emu.public_key}
    proc = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while emu.stats()["writes_accepted"] < 100:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "resume with:" in out + err
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted"
    accepted = emu.stats()["writes_accepted"]
    planned = _planned(run_dir)
    assert accepted < planned
    # every acknowledged write is in an outcome: the workers flushed before they stopped
    assert sum((run["outcomes"] or {}).get(k, 0) for k in ("sent", "resolved_applied")) == accepted
    # every user is matching, differing or unfinished, those of a shard never started too
    users = run["users_matching"] + run["users_differing"] + run["users_not_reached"]
    assert users == run["counts"]["users"]

    res = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_state(emu, expected)
    assert emu.stats()["writes_unchanged"] == 0, "a write was sent twice"
    assert emu.stats()["writes_accepted"] == planned


def test_a_bad_row_in_the_last_shard_stops_before_anything_is_sent_and_the_fixed_file_runs(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """A bad row past what the pre-flight check reads is found when its shard is analysed: still
    before the first request (every shard is planned first). The folder it leaves is not a run to
    resume: the same command, once the file is fixed, plans it afresh."""
    export = tmp_path / "events.csv"
    header = "user_id,flow_slug,step_id,action,created_at\n"
    # many rows, few requests: re-exported copies of a few users' starts
    rows = [f"user-{i % 5},flow_welcome_tour,,STARTED_FLOW,2024-01-0{1 + i % 5}T00:00:00Z\n" for i in range(12_000)]
    export.write_text(header + "".join(rows) + "user-9,flow_welcome_tour,,STARTED_FLOW,2024-03-01T08:00:00\n")
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emu.public_key}
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url, "--rate", "200"]
        args += ["--run-dir", str(tmp_path / "run"), "--shards", "3"]
        res = cli(args, env, tmp_path)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "row 12001, field 'time'" in res.stderr
        assert emu.stats()["writes_accepted"] == 0
        export.write_text(header + "".join(rows) + "user-9,flow_welcome_tour,,STARTED_FLOW,2024-03-01T08:00:00Z\n")
        res = cli(args, env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert emu.stats()["writes_accepted"] == 6
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "succeeded"
    assert run["counts"]["rows_in"] == 12_001
    assert run["accounting_closes"] is True


def test_too_many_quarantined_rows_past_the_pre_flight_stop_a_sharded_run_before_anything_is_sent(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """--max-quarantined counts every shard's quarantine, past the rows the pre-flight reads: above
    it nothing is sent; the same command with a higher limit then runs."""
    export = tmp_path / "events.csv"
    header = "user_id,flow_slug,step_id,action,created_at\n"
    rows = [f"user-{i % 5},flow_welcome_tour,,STARTED_FLOW,2024-01-0{1 + i % 5}T00:00:00Z\n" for i in range(12_000)]
    # 200 rows of a flow the catalog lacks, all past the pre-flight's first 10,000: 1.6 % of the rows
    rows += [f"user-{i},flow_gone,,STARTED_FLOW,2024-01-02T00:00:00Z\n" for i in range(200)]
    export.write_text(header + "".join(rows))
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emu.public_key}
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url, "--rate", "200"]
        args += ["--run-dir", str(tmp_path / "run"), "--shards", "3"]
        res = cli([*args, "--max-quarantined", "1%"], env, tmp_path)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "200 of 12,200 rows are quarantined (1.6%), more than --max-quarantined 1% allows" in res.stderr
        assert "unknown flow 'flow_gone'" in res.stderr
        assert emu.stats()["writes_accepted"] == 0
        res = cli([*args, "--max-quarantined", "2%"], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert emu.stats()["writes_accepted"] == 5
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["counts"]["rows_quarantined"] == 200
