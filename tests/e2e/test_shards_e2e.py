"""Sharded runs over real HTTP to an emulator process: killed and resumed exactly, synced shard by shard."""

from __future__ import annotations

import json
import os
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


def test_sigkill_mid_sharded_run_then_resume_sends_nothing_twice(
    slow_emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    emu = slow_emulator
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=150, seed=23)
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "cli.app", "backfill", str(export), "--catalog", str(CATALOG_PATH)]
    args += ["--api-url", emu.url, "--run-dir", str(run_dir), "--rate", "80", "--concurrency", "8", "--shards", "3"]
    env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emu.public_key}
    proc = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        # inside the second shard: the first finished, the second part sent, the third untouched
        first = _planned(run_dir) and pl.read_parquet(run_dir / "shards/000/plan.parquet").height
        while not first or emu.stats()["writes_accepted"] < first + 100:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
            first = first or (_planned(run_dir) and pl.read_parquet(run_dir / "shards/000/plan.parquet").height)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    planned = _planned(run_dir)
    assert emu.stats()["writes_accepted"] < planned, "the kill came too late to test anything"
    shard_status = [json.loads(p.read_text()).get("status") for p in sorted(run_dir.glob("shards/*/run.json"))]
    assert shard_status[0] == "succeeded", shard_status
    assert shard_status[1] == "pushing", shard_status

    res = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
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
