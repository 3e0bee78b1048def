"""Runs that never send twice: SIGKILL and resume, incremental sync, audit of two snapshots."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.rules import Action, FlowState, replay
from tests.e2e.servers import cli
from tests.e2e.test_backfill_e2e import CATALOG_PATH, T0, assert_state, catalog, write_sample

pytestmark = pytest.mark.slow


@pytest.fixture
def slow_emulator() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(catalog=CATALOG_PATH, latency_ms=20) as emu:
        yield emu


def test_sigkill_mid_run_then_resume_sends_nothing_twice(
    slow_emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    emu = slow_emulator
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=150, seed=21)
    args = [
        sys.executable,
        "-m",
        "cli.app",
        "backfill",
        str(export),
        "--catalog",
        str(CATALOG_PATH),
        "--api-url",
        emu.url,
        "--run-dir",
        str(tmp_path / "run"),
        "--rate",
        "80",
        "--concurrency",
        "8",
    ]
    env = {**os.environ, **prefect_env, "FRIGADE_API_KEY": emu.public_key}
    proc = subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        # Late enough that outcome and snapshot parts were flushed, and plenty was still to send.
        while emu.stats()["writes_accepted"] < 300:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    accepted_at_kill = emu.stats()["writes_accepted"]
    planned = pl.read_parquet(tmp_path / "run" / "plan.parquet").height
    assert accepted_at_kill < planned, "the kill came too late to test anything"

    res = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_state(emu, expected)
    stats = emu.stats()
    assert stats["writes_unchanged"] == 0, "a write was sent twice"
    assert stats["writes_accepted"] == planned
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(run["attempts"]) == 2
    assert run["status"] == "succeeded"
    assert run["mismatches"] == 0
    snapshot = pl.read_parquet(tmp_path / "run" / "snapshot.parquet")
    assert set(snapshot["user_id"].unique().to_list()) == {u for u, _ in expected}
    assert "## Attempts" in (tmp_path / "run" / "report.md").read_text()


def run_sync(
    emu: EmbeddedEmulator, env: dict[str, str], tmp_path: Path, export: Path, run: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`frigade-migrate sync` against the emulator, remembering state in tmp_path/state."""
    args = [
        "sync",
        str(export),
        "--catalog",
        str(CATALOG_PATH),
        "--api-url",
        emu.url,
        "--rate",
        "400",
        "--state-dir",
        str(tmp_path / "state"),
        "--run-dir",
        str(tmp_path / run),
        *extra,
    ]
    return cli(args, env, tmp_path)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _extend(export: Path, out: Path, progressed: list[str], regressed: list[str]) -> None:
    """A later export: some users completed more steps, some were reset to the start."""
    rows = read_rows(export)
    late = T0 + timedelta(days=90)
    cat = catalog()
    onboarding = cat.get("flow_onboarding")
    assert onboarding is not None
    for i, user in enumerate(progressed):
        for j, step in enumerate(onboarding.step_ids):
            rows.append(
                {
                    "user_id": user,
                    "flow_slug": "flow_onboarding",
                    "step_id": step,
                    "action": Action.COMPLETED_STEP.value,
                    "created_at": (late + timedelta(minutes=i, seconds=j)).isoformat().replace("+00:00", "Z"),
                    "data": "",
                }
            )
    for i, user in enumerate(regressed):
        for flow in cat.active:
            rows.append(
                {
                    "user_id": user,
                    "flow_slug": flow.slug,
                    "step_id": "",
                    "action": Action.NOT_STARTED_FLOW.value,
                    "created_at": (late + timedelta(hours=1, minutes=i)).isoformat().replace("+00:00", "Z"),
                    "data": "",
                }
            )
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _replay_export(path: Path) -> dict[tuple[str, str], FlowState]:
    rows = sorted({tuple(r.values()) for r in read_rows(path)}, key=lambda r: (r[0], r[1], r[4]))
    cat = catalog()
    out: dict[tuple[str, str], list[tuple[Action, str | None, str | None]]] = {}
    for user, flow, step, action, _, _ in rows:
        out.setdefault((user, flow), []).append((Action(action), step or None, None))
    result = {}
    for (user, flow), acts in out.items():
        f = cat.get(flow)
        assert f is not None
        result[(user, flow)] = replay(f.step_ids, acts)
    return result


def _counts(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = json.loads((run_dir / "run.json").read_text())["counts"]
    return counts


def test_sync_sends_only_what_changed_including_regressions_and_audit_shows_it(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        first = tmp_path / "day1.csv"
        write_sample(first, users=200, seed=31)
        users = sorted({r["user_id"] for r in read_rows(first)})
        progressed, regressed = users[10:12], users[50:51]
        second = tmp_path / "day2.csv"
        _extend(first, second, progressed, regressed)
        env = {**prefect_env, "FRIGADE_API_KEY": emu.public_key}

        def sync(export: Path, run: str) -> subprocess.CompletedProcess[str]:
            return run_sync(emu, env, tmp_path, export, run)

        assert sync(first, "r1").returncode == 0
        after_first = emu.stats()["writes_accepted"]
        res = sync(first, "r2")
        assert res.returncode == 0, res.stdout + res.stderr
        assert emu.stats()["writes_accepted"] == after_first, "an unchanged export must send nothing"
        assert pl.read_parquet(tmp_path / "r2" / "plan.parquet").height == 0
        # every user the first sync left at its target is skipped, not analysed again
        printed = pl.read_parquet(tmp_path / "r1" / "events_hashes.parquet").height
        assert _counts(tmp_path / "r2")["users_unchanged"] == printed > 0

        res = sync(second, "r3")
        assert res.returncode == 0, res.stdout + res.stderr
        plan = pl.read_parquet(tmp_path / "r3" / "plan.parquet")
        assert set(plan["user_id"].unique().to_list()) <= set(progressed + regressed)
        assert set(regressed) <= set(plan["user_id"].to_list())
        assert emu.stats()["writes_accepted"] == after_first + plan.height
        assert emu.stats()["writes_unchanged"] == 0
        assert _counts(tmp_path / "r3")["users_unchanged"] == printed - len(progressed + regressed)
        assert_state(emu, _replay_export(second))

    res = cli(["audit", str(tmp_path / "r1"), str(tmp_path / "r3"), "--out", str(tmp_path / "audit")], {}, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    changes = pl.read_parquet(tmp_path / "audit" / "audit.parquet")
    assert set(regressed) <= set(changes["user_id"].to_list())
    # Like with like: r3's own snapshot holds only the 3 users it planned, but the audit compares the
    # full state known after each sync, so nobody else seems to vanish or regress.
    assert pl.read_parquet(tmp_path / "r3" / "snapshot.parquet")["user_id"].n_unique() <= 3
    assert set(changes["user_id"].to_list()) <= set(progressed + regressed)
    assert "user" not in changes["field"].to_list()
    md = (tmp_path / "audit" / "audit.md").read_text()
    assert "| users only in a | 0 |" in md
    assert md.count("users (full state known after the run) |") == 2
    lost = changes.filter(pl.col("before") == "true", pl.col("after") == "false")
    assert set(lost["user_id"].to_list()) <= set(regressed)
    assert f"| users with a regression | {lost['user_id'].n_unique()} |" in md
    page = (tmp_path / "audit" / "audit.html").read_text()
    bars = re.findall(r'data-flow="([^"]+)" data-step="([^"]+)" data-side="([AB])" data-count="(\d+)"', page)
    a = pl.read_parquet(tmp_path / "r1" / "known_snapshot.parquet")
    b = pl.read_parquet(tmp_path / "r3" / "known_snapshot.parquet")
    assert set(a["user_id"].to_list()) == set(b["user_id"].to_list())
    flow_cells = re.findall(r'data-flow="([^"]+)" data-field="(\w+)" data-a="(\d+)" data-b="(\d+)"', page)
    assert len(flow_cells) == 3 * len(catalog().active)
    for flow, field, in_a, in_b in flow_cells:
        for side, snap in ((in_a, a), (in_b, b)):
            want = snap.unique(["user_id", "flow_slug"]).filter(pl.col("flow_slug") == flow)[f"flow_{field}"].sum()
            assert int(side) == want, (flow, field)
    for flow, step, side, count in bars:
        snap = a if side == "A" else b
        want = snap.filter((pl.col("flow_slug") == flow) & (pl.col("step_id") == step))["step_completed"].sum()
        assert int(count) == want, (flow, step, side)
    assert len(bars) == 2 * catalog().step_table().__len__()


def test_sync_from_current_plans_against_what_frigade_has_now(prefect_env: dict[str, str], tmp_path: Path) -> None:
    """Someone else completed a step in Frigade directly: --from-current must not send it again."""
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        export = tmp_path / "events.csv"
        expected = write_sample(export, users=20, seed=51)
        flow = catalog().get("flow_onboarding")
        assert flow is not None
        done_by_someone_else = next(
            (u, s)
            for (u, f), st in sorted(expected.items())
            if f == flow.slug
            for s, step in zip(flow.step_ids, st.steps, strict=True)
            if step.completed
        )
        user, step = done_by_someone_else
        r = httpx.post(
            f"{emu.url}/v1/public/flowStates",
            headers=emu.headers(private=False),
            json={"userId": user, "flowSlug": flow.slug, "actionType": "COMPLETED_STEP", "stepId": step},
        )
        assert r.status_code == 201
        res = run_sync(
            emu, {**prefect_env, "FRIGADE_API_KEY": emu.public_key}, tmp_path, export, "run", "--from-current"
        )
        assert res.returncode == 0, res.stdout + res.stderr
        plan = pl.read_parquet(tmp_path / "run" / "plan.parquet")
        assert plan.filter((pl.col("user_id") == user) & (pl.col("step_id") == step)).height == 0
        assert emu.stats()["writes_unchanged"] == 0
        assert_state(emu, expected)
