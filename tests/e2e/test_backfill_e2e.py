"""Backfill end to end: CLI -> Prefect server -> real emulator over HTTP, state checked per user."""

from __future__ import annotations

import csv
import json
import random
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.catalog import Catalog, parse_catalog
from frigade.models import UserFlowStates, flow_state_from_wire
from frigade.rules import DEFAULT_RULES, Action, FlowState, Rules, apply, initial_state, replay
from tests.e2e.servers import ROOT, cli, free_port

pytestmark = pytest.mark.slow
CATALOG_PATH = ROOT / "data" / "catalog.yaml"
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def catalog() -> Catalog:
    return parse_catalog(CATALOG_PATH.read_text(), str(CATALOG_PATH))


def realistic_history(rng: random.Random, steps: tuple[str, ...]) -> list[tuple[Action, str | None]]:
    """Starts, views, repeats, completions, skips, and now and then a reset or a dismissal."""
    out: list[tuple[Action, str | None]] = [(Action.STARTED_FLOW, None)]
    done = rng.randint(0, len(steps))
    for s in steps[:done]:
        out.append((Action.STARTED_STEP, s))
        if rng.random() < 0.3:
            out.append((Action.STARTED_STEP, s))
        out.append((rng.choice([Action.COMPLETED_STEP, Action.COMPLETED_STEP, Action.SKIPPED_STEP]), s))
    if done < len(steps) and rng.random() < 0.5:
        out.append((Action.STARTED_STEP, steps[done]))
    if done == len(steps) and rng.random() < 0.8:
        out.append((Action.COMPLETED_FLOW, None))
    elif rng.random() < 0.15:
        out.append((Action.SKIPPED_FLOW, None))
    if rng.random() < 0.08:
        out.append((Action.NOT_STARTED_FLOW, None))
        out.append((Action.STARTED_STEP, steps[0]))
    return out


def write_sample(
    path: Path, users: int, seed: int = 7, rules: Rules = DEFAULT_RULES
) -> dict[tuple[str, str], FlowState]:
    """A long-shape export with duplicates and rows out of order; returns the state it implies."""
    rng = random.Random(seed)
    cat = catalog()
    rows: list[dict[str, str]] = []
    expected: dict[tuple[str, str], FlowState] = {}
    for u in range(users):
        user = f"user-{u:04d}"
        for flow in rng.sample(list(cat.active), k=rng.randint(1, len(cat.active))):
            history = realistic_history(rng, flow.step_ids)
            t = T0 + timedelta(days=rng.randint(0, 30), seconds=u)
            for action, step in history:
                t += timedelta(seconds=rng.randint(1, 600))
                rows.append(
                    {
                        "user_id": user,
                        "flow_slug": flow.slug,
                        "step_id": step or "",
                        "action": action.value,
                        "created_at": t.isoformat().replace("+00:00", "Z"),
                        "data": json.dumps({"n": len(rows)}),
                    }
                )
            expected[(user, flow.slug)] = replay(flow.step_ids, [(a, s, None) for a, s in history], rules=rules)
    rows += rng.sample(rows, k=len(rows) // 10)  # duplicates, as overlapping export windows give
    rng.shuffle(rows)  # and nothing arrives in order
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["user_id", "flow_slug", "step_id", "action", "created_at", "data"])
        w.writeheader()
        w.writerows(rows)
    return expected


def assert_state(
    emu: EmbeddedEmulator, expected: dict[tuple[str, str], FlowState], rules: Rules = DEFAULT_RULES
) -> None:
    """Every user's stored state, in every active flow, is the expected one (initial where none)."""
    cat = catalog()
    for user in sorted({u for u, _ in expected}):
        got = stored_state(emu, user)
        for flow in cat.active:
            want = expected.get((user, flow.slug), initial_state(flow.step_ids, rules))
            wire = got.flow(flow.slug)
            assert wire is not None
            assert flow_state_from_wire(wire).logical() == want.logical(), (user, flow.slug)


def stored_state(emu: EmbeddedEmulator, user: str) -> UserFlowStates:
    r = httpx.get(f"{emu.url}/v1/public/flowStates", params={"userId": user}, headers=emu.headers(private=False))
    r.raise_for_status()
    return UserFlowStates.model_validate(r.json())


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        yield emu


def run(args: list[str], emu: EmbeddedEmulator, env: dict[str, str], cwd: Path, key: str | None = None):  # type: ignore[no-untyped-def]
    return cli(
        ["backfill", *args, "--catalog", str(CATALOG_PATH), "--api-url", emu.url],
        {**env, "FRIGADE_API_KEY": key or emu.public_key},
        cwd,
    )


def test_backfill_reproduces_every_users_state_and_sends_nothing_redundant(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    emulator.reset()
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=60)
    res = run(
        [str(export), "--run-dir", str(tmp_path / "run"), "--rate", "400", "--concurrency", "16"],
        emulator,
        prefect_env,
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert_state(emulator, expected)
    stats = emulator.stats()
    assert stats["writes_unchanged"] == 0, "a request was sent that changed nothing"
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    c = run_json["counts"]
    assert c["rows_in"] == c["rows_sent"] + c["rows_redundant"] + c["rows_dropped"] + c["rows_quarantined"]
    assert c["events_duplicate"] > 0
    assert c["rows_redundant"] > 0
    assert stats["writes_accepted"] == c["requests_planned"] == run_json["outcomes"]["sent"]
    assert pl.read_parquet(tmp_path / "run" / "reconcile.parquet").height == 0
    snapshot = pl.read_parquet(tmp_path / "run" / "snapshot.parquet")
    assert snapshot.select("user_id").n_unique() == len({u for u, _ in expected})
    assert "Row accounting" in (tmp_path / "run" / "report.md").read_text()
    key = emulator.public_key.encode()
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert key not in f.read_bytes(), f"the API key leaked into {f}"
    assert emulator.public_key not in res.stdout + res.stderr


def test_rerun_of_a_finished_run_sends_nothing(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    emulator.reset()
    export = tmp_path / "events.csv"
    write_sample(export, users=10, seed=3)
    args = [str(export), "--run-dir", str(tmp_path / "run"), "--rate", "400"]
    assert run(args, emulator, prefect_env, tmp_path).returncode == 0
    first = emulator.stats()["writes_accepted"]
    res = run(args, emulator, prefect_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert emulator.stats()["writes_accepted"] == first


def test_bad_key_stops_with_exit_3_before_a_run_folder_or_prefect(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    write_sample(export, users=3, seed=5)
    before = emulator.stats()
    res = run(
        [str(export), "--run-dir", str(tmp_path / "run")],
        emulator,
        prefect_env,
        tmp_path,
        key="api_public_wrong_key_123",
    )
    assert res.returncode == 3, res.stdout + res.stderr
    assert "api_public_wrong_key_123" not in res.stdout + res.stderr
    # the target check's one read found it: no run folder, no state folder, no write
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "state").exists()
    assert emulator.stats()["writes_accepted"] == before["writes_accepted"]
    # one line says why, with no Prefect log or traceback around it
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("stopped: 403"), res.stderr
    assert "ERROR" not in res.stderr


def test_missing_column_exits_2_naming_file_and_column_before_sending(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    emulator.reset()
    export = tmp_path / "bad.csv"
    export.write_text("user_id,flow_slug,step_id,created_at\nu1,flow_onboarding,,2024-01-01T00:00:00Z\n")
    res = cli(["plan", str(export), "--catalog", str(CATALOG_PATH)], {}, tmp_path)
    assert res.returncode == 2
    assert "bad.csv" in res.stderr
    assert "'action'" in res.stderr
    res = run([str(export)], emulator, prefect_env, tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert emulator.stats()["writes_accepted"] == 0


def test_plan_prints_requests_users_and_time_without_sending(emulator: EmbeddedEmulator, tmp_path: Path) -> None:
    emulator.reset()
    export = tmp_path / "events.csv"
    write_sample(export, users=5, seed=11)
    res = cli(["plan", str(export), "--catalog", str(CATALOG_PATH), "--rate", "10"], {}, tmp_path)
    assert res.returncode == 0, res.stderr
    for text in ("requests planned", "distinct users", "time at 10 req/s"):
        assert text in res.stdout
    assert emulator.stats()["requests_total"] == 0


def test_mau_cap_stops_with_exit_3_a_plain_message_and_resumes_once_raised(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=12, seed=13)
    # the same API after its upgrade: the same database at the same URL (a run folder is bound to its URL)
    db, port = tmp_path / "emu.db", free_port()
    args = [str(export), "--run-dir", str(tmp_path / "run"), "--rate", "400", "--concurrency", "4"]
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db, port=port, mau_cap=5) as emu:
        res = run(args, emu, prefect_env, tmp_path)
        assert res.returncode == 3, res.stdout + res.stderr
        assert "maximum allowed MAUs" in res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        # a read counts a user as active: the cap is met while reading the users' state before
        # planning, so the run stops with nothing planned or sent
        assert emu.stats()["distinct_users"] == 5
        assert emu.stats()["writes_accepted"] == 0
        written = 0
    assert not (tmp_path / "run" / "report.md").exists()
    # The account is upgraded: the same command resumes and finishes without resending anything.
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db, port=port) as emu:
        res = run(args, emu, prefect_env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        stats = emu.stats()
        assert stats["writes_unchanged"] == 0
        planned = pl.read_parquet(tmp_path / "run" / "plan.parquet").height
        assert written + stats["writes_accepted"] == planned
        assert "**Stopped**" not in (tmp_path / "run" / "report.md").read_text()
        assert "stopped" not in res.stderr.lower()
        record = json.loads((tmp_path / "run" / "run.json").read_text())
        assert record["outcomes"].get("sent", 0) == written + stats["writes_accepted"]
        assert f"| requests sent and accepted | {written + stats['writes_accepted']} |" in res.stdout
        assert "not sent" not in res.stdout
        users = record["counts"]["users"]
        assert res.stdout.rstrip().endswith(f"reconciliation: {users} of {users} users match the export exactly")
        assert_state(emu, expected)


def test_emulator_help_documents_every_option(tmp_path: Path) -> None:
    res = cli(["emulator", "--help"], {}, tmp_path)
    assert res.returncode == 0
    for option in (
        "--host",
        "--port",
        "--catalog",
        "--db",
        "--public-key",
        "--private-key",
        "--rate-limit",
        "--mau-cap",
        "--fault-rate",
        "--fault-kinds",
        "--fault-seed",
        "--latency-ms",
        "--latency-jitter-ms",
    ):
        assert option in res.stdout, option


def state_changing(rows: list[tuple[str, str, str, str, str]]) -> list[tuple[str, str, str, str, str]]:
    """The rows of one user, in (flow, time) order, whose event changes the state replayed so far:
    history mode replays those, and never sends a write the server already shows."""
    cat = catalog()
    states: dict[str, FlowState] = {}
    out = []
    for r in rows:
        flow = cat.get(r[1])
        assert flow is not None
        before = states.get(r[1], initial_state(flow.step_ids))
        after = apply(before, Action(r[3]), r[2] or None)
        if after.logical() != before.logical():
            out.append(r)
        states[r[1]] = after
    return out


def test_history_mode_replays_every_deduplicated_event_in_order_with_its_time(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """Every de-duplicated event that changes state, in order, with its own time (an event whose
    effect is already in place, such as a repeated STARTED_STEP, is not sent)."""
    emulator.reset()
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=6, seed=17)
    res = run(
        [str(export), "--run-dir", str(tmp_path / "run"), "--mode", "history", "--rate", "400"],
        emulator,
        prefect_env,
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    with export.open(newline="") as fh:
        rows = {(r["user_id"], r["flow_slug"], r["step_id"], r["action"], r["created_at"]) for r in csv.DictReader(fh)}
    for user in sorted({u for u, _ in expected}):
        want = state_changing(sorted((r for r in rows if r[0] == user), key=lambda r: (r[1], r[4])))
        got = [
            (user, h["flowSlug"], h["stepId"] or "", h["actionType"], h["createdAt"]) for h in emulator.history(user)
        ]
        got.sort(key=lambda r: (r[1], r[4]))
        as_time = [(u, f, s, a, datetime.fromisoformat(t.replace("Z", "+00:00"))) for u, f, s, a, t in got]
        assert as_time == [(u, f, s, a, datetime.fromisoformat(t.replace("Z", "+00:00"))) for u, f, s, a, t in want]
    assert_state(emulator, expected)


def test_rejected_requests_hold_the_flow_and_max_failures_decides_the_exit(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """The catalog we plan with has a step Frigade does not: those requests get 400s."""
    emulator.reset()
    ours = tmp_path / "catalog.yaml"
    ours.write_text(
        CATALOG_PATH.read_text().replace(
            "      - id: set-alerts\n", "      - id: set-alerts\n      - id: gone-step\n", 1
        )
    )
    export = tmp_path / "events.csv"
    rows = ["user_id,flow_slug,step_id,action,created_at,data"]
    for i in range(10):
        rows.append(f"ok-{i},flow_welcome_tour,welcome,COMPLETED_STEP,2024-01-01T00:00:0{i}Z,")
    rows.append("bad-1,flow_onboarding,gone-step,COMPLETED_STEP,2024-01-01T00:00:00Z,")
    rows.append("bad-1,flow_onboarding,,COMPLETED_FLOW,2024-01-01T00:01:00Z,")
    export.write_text("\n".join(rows) + "\n")

    def backfill(run_dir: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return cli(
            [
                "backfill",
                str(export),
                "--catalog",
                str(ours),
                "--api-url",
                emulator.url,
                "--run-dir",
                str(tmp_path / run_dir),
                "--rate",
                "400",
                *extra,
            ],
            {**prefect_env, "FRIGADE_API_KEY": emulator.public_key},
            tmp_path,
        )

    res = backfill("strict")
    assert res.returncode == 1, res.stdout + res.stderr
    run_json = json.loads((tmp_path / "strict" / "run.json").read_text())
    assert run_json["outcomes"]["rejected"] == 1
    assert run_json["outcomes"]["held"] == 1, "the flow's later request must be held, not sent"
    assert run_json["failed_users"] == 1
    assert run_json["unexplained_mismatches"] == 0
    history = emulator.history("bad-1")
    assert history == [], "nothing after the rejection may reach Frigade"
    emulator.reset()
    res = backfill("lenient", "--max-failures", "10%")
    assert res.returncode == 0, res.stdout + res.stderr
