"""The target is checked before anything starts: a bad key or a host that does not resolve answers
in seconds with nothing sent and no folder made, and a run folder is resumed only on its own API.
Against real emulator processes on 127.0.0.1, through the console command as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.embedded import EmbeddedEmulator
from lifecycle.exitcodes import ExitCode
from lifecycle.record import RunRecord
from lifecycle.runfolder import RunFolder, key_check
from lifecycle.settings import Settings
from tests.cli.test_cli_errors import run_cli
from tests.cli.test_run import CATALOG, GOOD


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def assert_nothing_left(cwd: Path) -> None:
    assert not (cwd / "runs").exists(), "a run folder was made"
    assert not (cwd / "state").exists(), "a state folder was made"


@pytest.mark.parametrize("command", ["backfill", "sync"])
def test_a_bad_key_stops_in_seconds_with_nothing_sent_and_no_folder(
    command: str, emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    before = emulator.stats()
    res, took = run_cli(
        [command, str(GOOD), "--catalog", str(CATALOG)],
        tmp_path,
        FRIGADE_API_URL=emulator.url,
        FRIGADE_API_KEY="api_public_wrong_KEY77",
    )
    assert res.returncode == ExitCode.STOPPED, res.stdout + res.stderr
    line = one_line(res.stderr)
    assert line.startswith("stopped: 403: the API key was refused")
    assert "nothing was sent" in line
    assert "KEY77" not in res.stdout + res.stderr
    assert took < 15, f"answered after {took:.0f} s"
    after = emulator.stats()
    assert after["writes_accepted"] == before["writes_accepted"]
    assert after["requests_total"] - before["requests_total"] == 1, "one read, nothing else"
    assert_nothing_left(tmp_path)


def test_a_host_that_does_not_resolve_is_refused_at_once_not_waited_out(tmp_path: Path) -> None:
    res, took = run_cli(
        ["backfill", str(GOOD), "--catalog", str(CATALOG), "--api-url", "http://no-such-host.invalid"],
        tmp_path,
        FRIGADE_API_KEY="api_public_whatever",
    )
    assert res.returncode == ExitCode.INPUT, res.stdout + res.stderr
    line = one_line(res.stderr)
    assert "cannot resolve the API's host 'no-such-host.invalid'" in line
    assert "http://no-such-host.invalid" in line
    assert took < 15, f"answered after {took:.0f} s (the outage window is 300 s)"
    assert_nothing_left(tmp_path)


def stopped_run(emulator: EmbeddedEmulator, tmp_path: Path) -> tuple[RunFolder, list[str]]:
    """A run folder as a run on ``emulator`` with its key leaves it when stopped, and the command resuming it."""
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    made = Settings.resolve({"api_url": emulator.url, "api_key": emulator.public_key}, env={})
    run.write_record(
        RunRecord(run_id="run", status="stopped", settings=made.public(), key_check=key_check(made.api_key))
    )
    return run, ["backfill", str(GOOD), "--catalog", str(CATALOG), "--run-dir", str(run.root)]


def test_a_resume_with_another_api_or_none_is_refused_with_nothing_sent(
    emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    run, args = stopped_run(emulator, tmp_path)
    with EmbeddedEmulator(catalog=CATALOG) as other:
        before = (emulator.stats()["requests_total"], other.stats()["requests_total"])
        # a new shell without the variables: today's fall-back would be the embedded emulator
        res, _ = run_cli(args, tmp_path)
        assert res.returncode == ExitCode.INPUT, res.stdout + res.stderr
        line = one_line(res.stderr)
        assert f"was made for {emulator.url}, but no API is configured" in line
        assert f"--api-url {emulator.url}" in line
        res, _ = run_cli(args, tmp_path, FRIGADE_API_URL=other.url, FRIGADE_API_KEY=other.public_key)
        assert res.returncode == ExitCode.INPUT, res.stdout + res.stderr
        assert f"was made for {emulator.url}, not {other.url}" in one_line(res.stderr)
        assert (emulator.stats()["requests_total"], other.stats()["requests_total"]) == before
    assert not (run.root / "emulator.db").exists(), "the embedded emulator was started"


def test_a_resume_with_another_key_on_the_same_api_is_refused_with_nothing_sent_and_no_key_written(
    emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    run, args = stopped_run(emulator, tmp_path)
    before = emulator.stats()["requests_total"]
    other = "api_public_OTHER_ACCOUNT_KEY42"
    for env in ({"FRIGADE_API_KEY": other}, {}):
        # another account's key on the same host, or none: the same API by its URL, not the same account
        res, _ = run_cli(args, tmp_path, FRIGADE_API_URL=emulator.url, **env)
        assert res.returncode == ExitCode.INPUT, res.stdout + res.stderr
        line = one_line(res.stderr)
        assert f"run folder {run.root} was made with another API key" in line
        assert "set FRIGADE_API_KEY to the key it was made with, or start a new run folder" in line
        assert "KEY42" not in res.stdout + res.stderr
        assert emulator.public_key not in res.stdout + res.stderr
    assert emulator.stats()["requests_total"] == before, "something was sent"
    for path in run.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"KEY42" not in data, path
            assert emulator.public_key.encode() not in data, path


def test_the_dry_run_reading_the_api_catalog_refuses_a_host_that_does_not_resolve_at_once(tmp_path: Path) -> None:
    res, took = run_cli(
        ["plan", str(GOOD), "--api-url", "http://no-such-host.invalid", "--api-key", "api_public_whatever"], tmp_path
    )
    assert res.returncode == ExitCode.INPUT, res.stdout + res.stderr
    assert "cannot resolve the API's host 'no-such-host.invalid'" in one_line(res.stderr)
    assert took < 15


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_dry_run_with_a_catalog_file_answers_a_refused_port_in_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    res, _ = run_cli(
        ["plan", str(GOOD), "--catalog", str(CATALOG), "--api-url", url, "--outage-window", "0"],
        tmp_path,
        FRIGADE_API_KEY="api_public_whatever",
    )
    assert res.returncode == ExitCode.STOPPED, res.stdout + res.stderr
    line = one_line(res.stderr)
    assert line.startswith(f"stopped: cannot read the first users' state at {url}"), line
    assert "Connection refused" in line
    assert "nothing was sent" in line


@pytest.mark.parametrize(
    ("suffix", "scheme", "expected"),
    [
        ("/v1", "http", "must be the API base, without /v1"),
        ("", "", "must start with http:// or https:// and name a host"),
        ("", "https", "cannot read the first users' state at https://"),
    ],
)
def test_the_dry_run_with_a_catalog_file_answers_a_wrong_url_in_one_line(
    suffix: str, scheme: str, expected: str, emulator: EmbeddedEmulator, tmp_path: Path
) -> None:
    host = emulator.url.split("://", 1)[1]
    url = f"{scheme}://{host}{suffix}" if scheme else host
    res, _ = run_cli(
        ["plan", str(GOOD), "--catalog", str(CATALOG), "--api-url", url, "--outage-window", "0"],
        tmp_path,
        FRIGADE_API_KEY=emulator.public_key,
    )
    assert res.returncode == (ExitCode.STOPPED if scheme == "https" else ExitCode.INPUT), res.stdout + res.stderr
    assert expected in one_line(res.stderr)
    assert emulator.url.split("://", 1)[1] in res.stderr
