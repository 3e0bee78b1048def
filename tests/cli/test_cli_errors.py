"""Every expected input error of `backfill` is one line on stderr, with the file, row or field, the
documented exit code and no traceback, and it answers before Prefect or an emulator starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.servers import ROOT

GOOD = ROOT / "data" / "long" / "events.csv"
#: Prefect's temporary server alone takes 15-30 s to start here; an input error answers long before
BEFORE_ANY_SERVER_S = 5.0


def run_cli(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FRIGADE_", "PREFECT_API_URL"))}
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return res, time.monotonic() - started


def _naive(tmp: Path) -> Path:
    p = tmp / "naive.csv"
    p.write_text("user_id,flow_slug,step_id,action,created_at\nu1,flow_onboarding,,STARTED_FLOW,2024-03-01 10:00:00\n")
    return p


def _bad_yaml(tmp: Path, name: str) -> Path:
    p = tmp / name
    p.write_text("flows:\n  - slug: a\n    steps: [x\n")
    return p


CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    "unknown preset": (lambda t: [str(GOOD), "--preset", "appcuse"], ["unknown preset 'appcuse'", "appcues"]),
    "missing file": (lambda t: [str(t / "nope.csv")], ["nope.csv", "not found"]),
    "missing column": (lambda t: [str(GOOD), "--user-col", "uid"], ["events.csv", "'uid'", "columns:"]),
    "malformed catalog": (
        lambda t: [str(GOOD), "--catalog", str(_bad_yaml(t, "cat.yaml"))],
        ["cat.yaml", "line 4", "catalog format"],
    ),
    "malformed mapping": (
        lambda t: [str(GOOD), "--mapping", str(_bad_yaml(t, "map.yaml"))],
        ["map.yaml", "not valid YAML/JSON at line 4"],
    ),
    "naive time": (lambda t: [str(_naive(t))], ["naive.csv", "row 1", "'time'", "--timezone"]),
    "unknown rules": (lambda t: [str(GOOD), "--rules", "sdkk"], ["'sdkk'", "sdk, legacy"]),
    "unknown time zone": (
        lambda t: [str(_naive(t)), "--timezone", "Europe/Pariss"],
        ["'Europe/Pariss' is not a known time zone", "did you mean 'Europe/Paris'"],
    ),
    "column named wrong": (
        lambda t: [str(GOOD), "--user-col", "user"],
        ["missing column", "--user-col user_id"],
    ),
    "step_map of a flow not in the catalog": (
        lambda t: [
            str(GOOD),
            "--mapping",
            str(_typo_map(t)),
        ],
        ["typo.yaml", "'step_map'", "'flow_onbaording'", "did you mean 'flow_onboarding'"],
    ),
    "more quarantined than --max-quarantined": (
        lambda t: [
            str(ROOT / "data" / "userflow" / "events.jsonl"),
            "--preset",
            "userflow",
            "--catalog",
            str(ROOT / "data" / "userflow" / "catalog.yaml"),
            "--max-quarantined",
            "0",
        ],
        ["1 of 120 rows are quarantined (0.8%)", "--max-quarantined 0", "'49d431cd-", "events.jsonl:42"],
    ),
    "unknown mapping key": (
        lambda t: [str(GOOD), "--mapping", str(_mapping(t, "flow_mapp: {old: DROP}\n"))],
        ["typo-key.yaml", "unknown key 'flow_mapp'", "did you mean 'flow_map'?"],
    ),
    "nothing to migrate": (
        # epoch numbers read under the default iso; a declared pattern they do not fit leaves them unread
        lambda t: [str(_epoch_seconds(t)), "--time-format", "%d/%m/%Y %H:%M", "--timezone", "UTC"],
        ["none of the 2 rows can be migrated", "unparseable time", "epoch.csv:1", "--time-format epoch_s"],
    ),
}


def _typo_map(tmp: Path) -> Path:
    p = tmp / "typo.yaml"
    p.write_text("step_map:\n  flow_onbaording:\n    connect_data: connect-data\n", encoding="utf-8")
    return p


def _mapping(tmp: Path, text: str) -> Path:
    p = tmp / "typo-key.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def _epoch_seconds(tmp: Path) -> Path:
    p = tmp / "epoch.csv"
    p.write_text(
        "user_id,flow_slug,step_id,action,created_at\n"
        "u1,flow_onboarding,,STARTED_FLOW,1709311703\nu2,flow_onboarding,,STARTED_FLOW,1709311704\n"
    )
    return p


def assert_one_error_line(res: subprocess.CompletedProcess[str], words: list[str]) -> None:
    """Exit 2 and one line on stderr, ``error: ...``, holding each of ``words``; no traceback."""
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_error_is_one_line_exit_2_before_any_server(case: str, tmp_path: Path) -> None:
    make_args, words = CASES[case]
    res, took = run_cli(["backfill", *make_args(tmp_path)], tmp_path)
    assert_one_error_line(res, words)
    # nothing started: no emulator banner, no run folder, and the answer came before any server could
    assert "emulator" not in res.stderr
    assert not (tmp_path / "runs").exists()
    assert took < BEFORE_ANY_SERVER_S, took


@pytest.mark.parametrize("case", ["nothing to migrate", "naive time", "unknown preset"])
def test_the_dry_run_answers_the_same_input_errors_as_the_run(case: str, tmp_path: Path) -> None:
    make_args, words = CASES[case]
    res, _ = run_cli(["plan", *make_args(tmp_path)], tmp_path)
    assert_one_error_line(res, words)


def test_the_dry_run_takes_a_backfills_command_line(tmp_path: Path) -> None:
    args = ["--concurrency", "4", "--max-failures", "1", "--no-created-at", "--outage-window", "0"]
    res, _ = run_cli(["plan", str(GOOD), *args], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "requests planned" in res.stdout


def test_debug_shows_the_traceback_of_an_expected_error(tmp_path: Path) -> None:
    res, _ = run_cli(["backfill", str(GOOD), "--preset", "appcuse", "--debug"], tmp_path)
    assert res.returncode == 2
    assert "Traceback" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("error: unknown preset")
    res, _ = run_cli(["backfill", str(GOOD), "--preset", "appcuse"], tmp_path, FRIGADE_MIGRATE_DEBUG="1")
    assert "Traceback" in res.stderr


def test_a_mistyped_option_shows_the_subcommands_usage_and_is_not_abbreviated(tmp_path: Path) -> None:
    res, _ = run_cli(["backfill", str(GOOD), "--rat", "50"], tmp_path)
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert "unrecognized arguments: --rat 50 (did you mean --rate?) (usage: frigade-migrate backfill" in line
    assert not (tmp_path / "runs").exists()


def test_inspect_refuses_an_unreadable_file_in_one_line_on_stderr(tmp_path: Path) -> None:
    broken = tmp_path / "cut.parquet"
    broken.write_bytes(b"PAR1" + b"\0" * 64)
    for target in (broken, tmp_path):
        res, _ = run_cli(["inspect", str(target)], tmp_path)
        assert res.returncode == 2
        assert res.stdout == ""
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith(f"error: file {target}")
        assert "Traceback" not in res.stderr
