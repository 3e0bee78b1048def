"""The exit codes of the commands, as a script sees them: 0 done, 2 bad input or usage (nothing
sent), 3 stopped by the API (a real emulator on 127.0.0.1 refusing the key). The run paths' 1 and
130 are the end-to-end tests' (tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.app import main
from emulator.embedded import EmbeddedEmulator
from lifecycle.exitcodes import ExitCode
from tests.cli.test_cli_errors import run_cli
from tests.e2e.servers import ROOT

GOOD = ROOT / "data" / "long" / "events.csv"
CATALOG = ROOT / "data" / "catalog.yaml"


def test_the_codes_are_the_documented_ones() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130]


def test_a_plan_that_reads_the_api_catalog_exits_0(emulator: EmbeddedEmulator, tmp_path: Path) -> None:
    res, _ = run_cli(["plan", str(GOOD), "--api-url", emulator.url, "--api-key", emulator.public_key], tmp_path)
    assert res.returncode == ExitCode.OK, res.stdout + res.stderr
    assert "requests planned" in res.stdout


def test_a_bad_key_stops_with_exit_3_in_one_line(emulator: EmbeddedEmulator, tmp_path: Path) -> None:
    res, _ = run_cli(["plan", str(GOOD), "--api-url", emulator.url, "--api-key", "api_public_wrong"], tmp_path)
    assert res.returncode == ExitCode.STOPPED, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("stopped: ")
    assert "api_public_wrong" not in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


def test_a_bad_key_given_by_the_environment_stops_the_probe_with_exit_3(
    emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    res, _ = run_cli(
        ["probe", "--flow", "flow_onboarding", "--yes", "--out", str(tmp_path / "rules.json")],
        tmp_path,
        FRIGADE_API_URL=emulator.url,
        FRIGADE_API_KEY="api_private_wrong",
    )
    assert res.returncode == ExitCode.STOPPED, res.stdout + res.stderr
    assert "api_private_wrong" not in res.stderr + res.stdout
    assert not (tmp_path / "rules.json").exists()


def test_probe_without_yes_sends_nothing_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--flow", "flow_onboarding"]) == ExitCode.INPUT
    assert "run again with --yes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--rate", "0"], {}, "error: --rate must be above 0, not 0"),
        (["--concurrency", "0"], {}, "error: --concurrency must be at least 1, not 0"),
        ([], {"FRIGADE_MIGRATE_RATE": "fast"}, "error: rate (env FRIGADE_MIGRATE_RATE) must be a number, not 'fast'"),
        (["--max-failures", "lots"], {}, "error: --max-failures must be a count or a percentage like 0.5%, not 'lots'"),
    ],
)
def test_a_bad_setting_is_one_line_exit_2(args: list[str], env: dict[str, str], line: str, tmp_path: Path) -> None:
    push_only = args[:1] in (["--concurrency"], ["--max-failures"])
    for command in ("backfill", "sync") if push_only else ("backfill", "sync", "plan"):
        res, _ = run_cli([command, str(GOOD), *args], tmp_path, **env)
        assert res.returncode == ExitCode.INPUT, res.stdout + res.stderr
        assert res.stderr.strip().splitlines() == [line], (command, res.stderr)
        assert not (tmp_path / "runs").exists()


def test_a_bad_config_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "frigade-migrate.yaml").write_text("rate: fast\n")
    res, _ = run_cli(["plan", str(GOOD)], tmp_path)
    assert res.returncode == ExitCode.INPUT
    assert res.stderr.strip() == "error: file frigade-migrate.yaml: rate must be a number, not 'fast'"


def test_a_usage_error_exits_2_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan"]) == ExitCode.INPUT
    assert "Missing argument 'EXPORT'" in capsys.readouterr().err


@pytest.mark.parametrize(("shards", "limit", "code"), [("1", "0", 2), ("2", "0", 2), ("2", "2%", 0), ("1", "1", 0)])
def test_the_dry_run_refuses_more_quarantined_rows_than_allowed(
    shards: str, limit: str, code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1 of the Userflow sample's 120 rows is quarantined: 0 refuses it; 2% or 1 row allow it, one
    shard or two."""
    export = ROOT / "data" / "userflow" / "events.jsonl"
    catalog = ROOT / "data" / "userflow" / "catalog.yaml"
    args = ["plan", str(export), "--preset", "userflow", "--catalog", str(catalog), "--shards", shards]
    assert main([*args, "--run-dir", str(tmp_path / "p"), "--max-quarantined", limit]) == code
    err = capsys.readouterr().err
    if code:
        want = f"error: 1 of 120 rows are quarantined (0.8%), more than --max-quarantined {limit} allows"
        assert err.startswith(want)
