"""Migrating into a live account: users who already have state in Frigade (left by the SDK) are the
starting point of the plan, never a surprise. Over real HTTP to an emulator process seeded by POSTing
writes, as the SDK would leave them."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.models import flow_state_from_wire
from frigade.rules import Action, FlowState
from lifecycle.execute import replan_work, work_for
from lifecycle.finish import finish_run
from lifecycle.job import Job
from lifecycle.runfolder import RunFolder
from lifecycle.settings import Settings
from lifecycle.statedir import StateDir
from tests.e2e.servers import cli
from tests.e2e.test_backfill_e2e import CATALOG_PATH, catalog, stored_state, write_sample
from transforms.buckets import buckets_of
from transforms.snapshot import SNAPSHOT_SCHEMA

pytestmark = pytest.mark.slow

A = Action
#: (user, flow, action, step) writes, in order
Seed = list[tuple[str, str, Action, str | None]]


def seed_writes(expected: dict[tuple[str, str], FlowState], share: int = 3) -> Seed:
    """State for every ``share``-th user of the export: ahead of it in one of its flows (every step
    and the flow completed), behind it (only the first step started), or in a flow it never mentions."""
    flows = {f.slug: f.step_ids for f in catalog().active}
    users = sorted({u for u, _ in expected})
    writes: Seed = []
    for i, user in enumerate(users[::share]):
        mine = sorted(f for u, f in expected if u == user)
        others = sorted(set(flows) - set(mine))
        kind = i % 3
        if kind == 0:
            flow = mine[0]
            writes += [(user, flow, A.COMPLETED_STEP, s) for s in flows[flow]] + [(user, flow, A.COMPLETED_FLOW, None)]
        elif kind == 1 or not others:
            writes.append((user, mine[-1], A.STARTED_STEP, flows[mine[-1]][0]))
        else:
            writes += [
                (user, others[0], A.STARTED_FLOW, None),
                (user, others[0], A.COMPLETED_STEP, flows[others[0]][0]),
            ]
    return writes


def seed(emu: EmbeddedEmulator, writes: Seed) -> None:
    with emu.client() as http:
        for user, flow, action, step in writes:
            body = {"userId": user, "flowSlug": flow, "actionType": action.value}
            if step is not None:
                body["stepId"] = step
            http.post("/v1/public/flowStates", json=body).raise_for_status()


def states(emu: EmbeddedEmulator, users: list[str]) -> dict[tuple[str, str], FlowState]:
    out: dict[tuple[str, str], FlowState] = {}
    for user in users:
        for wire in stored_state(emu, user).eligible_flows:
            out[(user, wire.flow_slug)] = flow_state_from_wire(wire)
    return out


def flags(state: FlowState) -> set[str]:
    out = {n for n in ("started", "completed", "skipped") if getattr(state, n)}
    for i, step in enumerate(state.steps):
        out |= {f"{i}.{n}" for n in ("started", "completed", "skipped") if getattr(step, n)}
    return out


def backfill(emu: EmbeddedEmulator, env: dict[str, str], tmp: Path, export: Path, run: str, *extra: str) -> str:
    args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url, "--rate", "400"]
    res = cli([*args, "--run-dir", str(tmp / run), "--state-dir", str(tmp / "state"), *extra], env, tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


@contextlib.contextmanager
def seeded_emulator(
    writes: Seed, users: list[str]
) -> Iterator[tuple[EmbeddedEmulator, dict[tuple[str, str], FlowState]]]:
    """A new emulator seeded with ``writes``, and ``users``' states in it."""
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        seed(emu, writes)
        yield emu, states(emu, users)


def assert_progress_kept(
    before: dict[tuple[str, str], FlowState],
    after: dict[tuple[str, str], FlowState],
    expected: dict[tuple[str, str], FlowState],
) -> None:
    """Every flag true before or in the export is true after."""
    for key, now in after.items():
        assert flags(before[key]) <= flags(now), ("progress made in Frigade was undone", key)
        if key in expected:
            assert flags(expected[key]) <= flags(now), ("the export's progress is missing", key)


def test_backfill_into_a_live_account_merges_and_overwrite_lands_on_the_export(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=30, seed=5)
    writes = seed_writes(expected)
    users = sorted({u for u, _ in expected})
    seeded = {u for u, _, _, _ in writes}
    assert len(seeded) == 10
    env = {**prefect_env, "FRIGADE_API_KEY": "api_public_emulator"}

    with seeded_emulator(writes, users) as (emu, before):
        out = backfill(emu, env, tmp_path, export, "merge")
        after = states(emu, users)
        assert emu.stats()["writes_unchanged"] == 0, "a write changed nothing"
        assert_progress_kept(before, after, expected)
        for key, now in after.items():
            was = before[key]
            if was.started:
                assert now.current_step_index >= was.current_step_index, ("a pointer moved backwards", key)
            if key not in expected:
                assert now.logical() == was.logical(), ("a flow the export never mentions changed", key)
        run = json.loads((tmp_path / "merge" / "run.json").read_text())
        ex = run["existing_state"]
        assert (ex["policy"], ex["users_read"], ex["users_with_state"]) == ("merge", 30, len(seeded))
        assert ex["user_flows_merged"] > 0
        assert "users with state in Frigade (policy merge)" in out
        # what a clean merge matched, in the words CI greps for
        assert out.rstrip().endswith("of 30 users match the export merged with the state they had in Frigade"), out

        # Re-running the finished backfill in a new run folder changes nothing and sends nothing.
        accepted = emu.stats()["writes_accepted"]
        backfill(emu, env, tmp_path, export, "again")
        assert emu.stats()["writes_accepted"] == accepted
        assert emu.stats()["writes_unchanged"] == 0
        assert states(emu, users) == after

    with seeded_emulator(writes, users) as (emu, before):
        backfill(emu, env, tmp_path, export, "overwrite", "--policy", "overwrite", "--state-dir", str(tmp_path / "s2"))
        after = states(emu, users)
        assert emu.stats()["writes_unchanged"] == 0
        for key, now in after.items():
            want = expected.get(key, before[key])
            assert now.logical() == want.logical(), key


def test_sync_applies_the_exports_reset_and_keeps_what_frigade_advanced(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """The tool wrote two flows for u1; the export then resets one (applied), while the user advanced
    the other in Frigade (kept, nothing resent)."""
    cat = {f.slug: f.step_ids for f in catalog().active}
    reset_flow, kept_flow = sorted(cat)[:2]
    rows = ["user_id,flow_slug,step_id,action,created_at"]
    t = 0

    def row(user: str, flow: str, action: str, step: str = "") -> str:
        nonlocal t
        t += 1
        return f"{user},{flow},{step},{action},2024-03-01T00:00:{t:02d}Z"

    first = [
        row("u1", reset_flow, "COMPLETED_STEP", cat[reset_flow][0]),
        row("u1", kept_flow, "COMPLETED_STEP", cat[kept_flow][0]),
        row("u2", kept_flow, "COMPLETED_STEP", cat[kept_flow][0]),
        row("u3", reset_flow, "COMPLETED_STEP", cat[reset_flow][0]),
        row("u3", kept_flow, "COMPLETED_STEP", cat[kept_flow][0]),
    ]
    # u3 had done two steps of a flow in Frigade before the first sync (kept; the sync remembers them, as
    # it wrote u3's other flow); the export then catches up to them: u3 must be read, not planned from
    # the initial state (a write that changes nothing)
    export = tmp_path / "export.csv"
    export.write_text("\n".join([*rows, *first]) + "\n")
    env = {**prefect_env, "FRIGADE_API_KEY": "api_public_emulator"}

    def sync(run: str) -> None:
        args = ["sync", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
        res = cli([*args, "--state-dir", str(tmp_path / "state"), "--run-dir", str(tmp_path / run)], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr

    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        seed(emu, [("u3", kept_flow, A.COMPLETED_STEP, s) for s in cat[kept_flow][:2]])
        sync("first")
        # the user advances the other flow in Frigade (the SDK's writes)
        seed(emu, [("u1", kept_flow, A.COMPLETED_STEP, cat[kept_flow][1])])
        advanced = states(emu, ["u1"])[("u1", kept_flow)]
        caught_up = row("u3", kept_flow, "COMPLETED_STEP", cat[kept_flow][1])
        export.write_text("\n".join([*rows, *first, row("u1", reset_flow, "NOT_STARTED_FLOW"), caught_up]) + "\n")
        accepted = emu.stats()["writes_accepted"]
        sync("second")
        now = states(emu, ["u1"])
        assert not now[("u1", reset_flow)].started, "the export's reset was not applied"
        assert now[("u1", kept_flow)].logical() == advanced.logical(), "what the user did in Frigade was undone"
        assert emu.stats()["writes_accepted"] == accepted + 1
        assert emu.stats()["writes_unchanged"] == 0


def test_every_user_is_read_before_planning_even_when_the_first_hundred_have_no_state(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """The oldest 130 users have no state; some later ones have (the SDK started a flow's last step).
    History mode refuses to replay onto them before sending anything. A state-mode run reads every
    user, so no write is planned blind: none changes nothing, no pointer moves back."""
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=160, seed=11)
    users = sorted({u for u, _ in expected})
    flows = {f.slug: f.step_ids for f in catalog().active}
    late = users[130::3]
    # in every flow of theirs, the last step started (the SDK's STARTED_STEP), so no write predicts it
    writes: Seed = [(u, f, A.STARTED_STEP, flows[f][-1]) for u, f in sorted(expected) if u in late]
    env = {**prefect_env, "FRIGADE_API_KEY": "api_public_emulator"}
    with seeded_emulator(writes, late) as (emu, before):
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url, "--mode", "history"]
        refused = cli([*args, "--run-dir", str(tmp_path / "history")], env, tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"{len(late)} of the export's users already have state" in refused.stderr
        assert "--mode state" in refused.stderr
        assert "--policy overwrite" in refused.stderr
        assert emu.stats()["writes_accepted"] == len(writes), "history mode sent a write"
        out = backfill(emu, env, tmp_path, export, "run")
        assert emu.stats()["writes_unchanged"] == 0, "a write was planned blind and changed nothing"
        after = states(emu, late)
        assert_progress_kept(before, after, expected)
        for key, state in before.items():
            assert after[key].current_step_index >= state.current_step_index, ("pointer moved back", key)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["existing_state"]["users_read"] == len(users)
    assert run["existing_state"]["users_with_state"] == len(late)
    assert run["status"] == "succeeded"
    assert f"{len(users)} users read before planning" in out


def finished_again(run: Path, state: Path, to: Path, per_bucket: int) -> None:
    """A copy of a run folder and its state folder in ``to``, its held user-flows planned again and
    its end worked out again, ``per_bucket`` rows of returned state at a time."""
    shutil.copytree(run, to / "run")
    shutil.copytree(state, to / "state")
    folder = RunFolder(to / "run")
    record = folder.read_record()
    given = {k: v for k, v in (record.settings or {}).items() if k not in ("api_key", "full", "from_current")}
    job = Job([Path("unused.csv")], Settings.resolve(given, env={}), folder, state_dir=StateDir(to / "state"))
    job.run, job.attempt = record, len(record.attempts)
    replan_work(job, work_for(job), per_bucket)
    finish_run(job, record.attempts[-1], 1.0, per_bucket)


def test_the_end_of_a_run_a_bucket_of_users_at_a_time_writes_what_it_writes_in_one_piece(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """A live account's backfill, then users whose state moved after their last answer (a newer
    answer showing a flow completed, or lacking one): planning them again and the run's end, done in
    buckets of a few users, write every file as in one piece, row for row."""
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=40, seed=3)
    users = sorted({u for u, _ in expected})
    env = {**prefect_env, "FRIGADE_API_KEY": "api_public_emulator"}
    with seeded_emulator(seed_writes(expected), users) as (emu, _):
        backfill(emu, env, tmp_path, export, "run")
    run, state = tmp_path / "run", next((tmp_path / "state").iterdir())
    folder = RunFolder(run)
    returned = folder.scan_parts("snapshot_parts", SNAPSHOT_SCHEMA)
    moved = (
        returned.filter(pl.col("user_id").is_in(users[::7]))
        .with_columns(pl.lit(True).alias(c) for c in ("flow_started", "flow_completed", "step_completed"))
        .with_columns(pl.col("captured_at") + 1)
    )
    # and users whose newer answer lacks a flow: a mismatch, nothing to plan again
    lacking = returned.filter(pl.col("user_id").is_in(users[3::7])).filter(
        pl.col("flow_slug") != pl.col("flow_slug").min().over("user_id")
    )
    folder.write_part("snapshot_parts", 9, pl.concat([moved, lacking.with_columns(pl.col("captured_at") + 1)]))
    per_bucket = 60
    assert len(buckets_of(folder.lazy_parts("snapshot_parts", SNAPSHOT_SCHEMA), per_bucket)) > 5

    finished_again(run, state, tmp_path / "one", 10**9)
    finished_again(run, state, tmp_path / "many", per_bucket)
    one, many = tmp_path / "one", tmp_path / "many"
    replanned = RunFolder(one / "run").read_record().counts or {}
    assert replanned["user_flows_replanned"] >= len(users[::7])
    assert pl.read_parquet(one / "run" / "reconcile.parquet").height > 0
    for name in ("snapshot", "reconcile", "known_snapshot", "plan", "expected_flows", "expected_steps"):
        for d in ("run", "state") if name == "known_snapshot" else ("run",):
            a, b = (pl.read_parquet(root / d / f"{name}.parquet") for root in (one, many))
            assert a.height > 0 or name == "reconcile"
            assert a.equals(b), (d, name)
    # the starting states of the user-flows planned again come in no set order, bucketed or not
    for name in ("baseline_flows", "baseline_steps"):
        a, b = (pl.read_parquet(root / "run" / f"{name}.parquet") for root in (one, many))
        assert a.sort(a.columns).equals(b.sort(b.columns)), name
    for name in ("flows", "steps", "users"):
        a, b = (pl.read_parquet(root / "state" / f"{name}.parquet") for root in (one, many))
        assert a.equals(b), name
    assert (one / "run" / "report.md").read_text() == (many / "run" / "report.md").read_text()
    assert (one / "state" / "last_run.json").read_text() == (many / "state" / "last_run.json").read_text()
    runs = [json.loads((root / "run" / "run.json").read_text()) for root in (one, many)]
    for r in runs:
        for attempt in r["attempts"]:
            attempt.pop("finished_at")
    assert runs[0] == runs[1]
    assert runs[0]["targeting"]["user_flows"] > 0
