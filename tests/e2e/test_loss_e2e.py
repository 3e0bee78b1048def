"""The verdict counts loss: rows not sent are told apart (not onboarding state, not a user to migrate,
progress not migrated), and a run that left known users' progress behind ends exit 1 saying how much,
why and where, unless the user accepted it (``--max-quarantined``). Over real HTTP to an emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import ROOT, cli

pytestmark = pytest.mark.slow
CATALOG = ROOT / "data" / "catalog.yaml"

EXPORT = """user_id,flow_slug,step_id,action,created_at
u1,flow_onboarding,,STARTED_FLOW,2024-03-01T10:00:00Z
u1,flow_onboarding,connect-data,COMPLETED_STEP,2024-03-01T10:01:00Z
u2,flow_onboarding,,STARTED_FLOW,2024-03-01T10:00:00Z
u2,flow_gone,,STARTED_FLOW,2024-03-01T10:02:00Z
u3,flow_onboarding,,STARTED_FLOW,2024-03-01T10:00:00Z
u3,flow_onboarding,no-such-step,COMPLETED_STEP,2024-03-01T10:03:00Z
u4,flow_gone,,COMPLETED_FLOW,2024-03-01T10:04:00Z
$device:a1,flow_onboarding,,STARTED_FLOW,2024-03-01T10:00:00Z
$device:b2,flow_onboarding,,STARTED_FLOW,2024-03-01T10:00:00Z
u1,flow_onboarding,connect-data,STEP_VIEWED,2024-03-01T10:05:00Z
"""
MAPPING = 'reject_users: ["$device:*"]\n'


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(catalog=CATALOG) as emu:
        yield emu


def _backfill(
    emulator: EmbeddedEmulator, env: dict[str, str], tmp_path: Path, *extra: str
) -> tuple[int, list[str], list[str], dict[str, object], str]:
    emulator.reset()
    (tmp_path / "export.csv").write_text(EXPORT)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    args = ["backfill", str(tmp_path / "export.csv"), "--mapping", str(tmp_path / "mapping.yaml")]
    args += ["--catalog", str(CATALOG), "--api-url", emulator.url, "--run-dir", str(tmp_path / "run"), *extra]
    res = cli(args, {**env, "FRIGADE_API_KEY": emulator.public_key}, tmp_path)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    report = (tmp_path / "run" / "report.md").read_text()
    return res.returncode, res.stdout.strip().splitlines(), res.stderr.strip().splitlines(), run, report


def _three_counts(run: dict[str, object], report: str, stdout: list[str]) -> None:
    counts = run["counts"]
    assert isinstance(counts, dict)
    assert counts["rows_dropped"] == 1
    assert counts["rows_not_a_user"] == 2
    assert counts["rows_not_migrated"] == 3
    assert (counts["users_not_migrated"], counts["user_flows_not_migrated"]) == (3, 3)
    assert counts["rows_in"] == 10 == counts["rows_sent"] + counts["rows_redundant"] + 1 + 2 + 3
    assert run["accounting_closes"] is True
    for text in (report, "\n".join(stdout)):
        assert "| rows not onboarding state (other events, dropped) | 1 |" in text
        assert "| rows not a user to migrate (anonymous or no user id) | 2 |" in text
        assert "| rows of progress not migrated (quarantined) | 3 |" in text
    assert "## Progress not migrated (quarantine.parquet, kind = not_migrated)" in report
    assert "## Not a user to migrate (quarantine.parquet, kind = not_a_user)" in report
    assert "## Not onboarding state (events dropped, by name)" in report


@pytest.mark.parametrize("shards", ["1", "2"])
def test_progress_not_migrated_fails_the_run_and_says_how_much_why_and_where(
    shards: str, emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    code, stdout, stderr, run, report = _backfill(emulator, prefect_env, tmp_path, "--shards", shards)
    assert code == 1, "\n".join(stdout + stderr)
    _three_counts(run, report, stdout)
    assert run["status"] == "failed"
    reconciliation = (
        "reconciliation: 3 of 3 users match what was migrated; "
        "3 user-flows of 3 users have progress that was not (see quarantine.parquet)"
    )
    assert stdout[-1] == reconciliation
    assert f"**Reconciliation**: {reconciliation.removeprefix('reconciliation: ')}" in report
    last = " ".join(stderr[stderr.index(next(s for s in stderr if s.startswith("progress not migrated"))) :])
    assert last.startswith("progress not migrated: 3 user-flows of 3 users (3 rows, most as \"unknown flow 'flow_gone'")
    assert "(2 rows, first at " in last
    assert "export.csv:4, " in last
    assert str(tmp_path / "run" / "quarantine.parquet") in last
    assert "--max-quarantined" in last


def test_progress_not_migrated_that_the_user_accepted_ends_clean(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    code, stdout, stderr, run, report = _backfill(emulator, prefect_env, tmp_path, "--max-quarantined", "5")
    assert code == 0, "\n".join(stdout + stderr)
    _three_counts(run, report, stdout)
    assert run["status"] == "succeeded"
    assert stdout[-1] == (
        "reconciliation: 3 of 3 users match what was migrated; "
        "3 user-flows of 3 users have progress that was not (accepted: --max-quarantined 5)"
    )
    assert not any(s.startswith("progress not migrated") for s in stderr)
    assert "| users with progress not migrated (accepted: --max-quarantined 5) | 3 user-flows of 3 users |" in report


WIDE = """user_id,flow_announcement_completed_at,flow_retired_tour_completed_at
u1,2024-03-01T10:00:00Z,2024-03-01T11:00:00Z
u2,2024-03-01T10:00:00Z,2024-03-01T11:00:00Z
u3,2024-03-01T10:00:00Z,
"""


@pytest.mark.parametrize("shards", ["1", "2"])
def test_a_lost_column_of_a_wide_row_planned_for_another_fails_the_run(
    shards: str, emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    # every row is planned (its first column's flow is known), so no row is "not migrated"; the second
    # column's flow is not in the catalog: two users' progress lost all the same
    emulator.reset()
    (tmp_path / "wide.csv").write_text(WIDE)
    args = ["backfill", str(tmp_path / "wide.csv"), "--preset", "wide", "--catalog", str(CATALOG)]
    args += ["--api-url", emulator.url, "--run-dir", str(tmp_path / "run"), "--shards", shards]
    res = cli(args, {**prefect_env, "FRIGADE_API_KEY": emulator.public_key}, tmp_path)
    stdout, stderr = res.stdout.strip().splitlines(), res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stdout + res.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    counts = run["counts"]
    assert (counts["rows_in"], counts["rows_sent"], counts["rows_not_migrated"]) == (3, 3, 0)
    assert (counts["rows_partly_not_migrated"], counts["users_not_migrated"], counts["user_flows_not_migrated"]) == (
        2,
        2,
        2,
    )
    assert run["accounting_closes"] is True
    assert run["status"] == "failed"
    assert "| rows with some progress not migrated (counted above as planned or redundant) | 2 |" in res.stdout
    assert stdout[-1] == (
        "reconciliation: 3 of 3 users match what was migrated; "
        "2 user-flows of 2 users have progress that was not (see quarantine.parquet)"
    )
    assert any(s.startswith("progress not migrated: 2 user-flows of 2 users (2 rows") for s in stderr)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "**Reconciliation**: 3 of 3 users match what was migrated; 2 user-flows of 2 users" in report
