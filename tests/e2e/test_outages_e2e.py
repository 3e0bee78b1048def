"""Outages and interrupts over real processes: the CLI as a subprocess, an emulator process this test
starts, kills and restarts by its own pid, and signals sent to the CLI by its pid."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import polars as pl
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.rules import FlowState
from tests.e2e.servers import cli
from tests.e2e.test_backfill_e2e import CATALOG_PATH, assert_state, write_sample

pytestmark = pytest.mark.slow


def start_cli(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """`frigade-migrate ARGS` in the background, its output in cwd/cli-<n>.out / .err."""
    n = len(list(cwd.glob("cli-*.err")))
    out, err = (cwd / f"cli-{n}.out").open("wb"), (cwd / f"cli-{n}.err").open("wb")
    with out, err:
        return subprocess.Popen([sys.executable, "-m", "cli", *args], env=dict(env), cwd=cwd, stdout=out, stderr=err)


def output(cwd: Path) -> tuple[str, str]:
    n = len(list(cwd.glob("cli-*.err"))) - 1
    return (cwd / f"cli-{n}.out").read_text(errors="replace"), (cwd / f"cli-{n}.err").read_text(errors="replace")


def wait_until(done: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, "the run ended before the test could act"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def job_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRIGADE_")}
    return {**env, **extra}


def accepted(emu: EmbeddedEmulator) -> int:
    return int(emu.stats()["writes_accepted"])


def planned(run_dir: Path) -> int:
    return pl.read_parquet(run_dir / "plan.parquet").height


def run_json(run_dir: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((run_dir / "run.json").read_text())
    return doc


def resume_command(stderr: str, *faster: str) -> list[str]:
    """The command the run printed to resume it, as words, run here through this interpreter
    (``faster``: options appended, e.g. a higher --rate, which changes nothing of what is sent)."""
    found = re.findall(r"resume with: (frigade-migrate .+)$", stderr, flags=re.MULTILINE | re.IGNORECASE)
    assert found, stderr
    words = shlex.split(found[-1])
    assert words[0] == "frigade-migrate"
    return [*words[1:], *faster]


def assert_landed_once(db: Path, expected: dict[tuple[str, str], FlowState], planned_requests: int) -> None:
    """On an emulator over the run's database: every user exact, and one history row per planned
    request (a write sent twice would add one)."""
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db) as emu:
        assert_state(emu, expected)
        assert emu.stats()["history_rows"] == planned_requests


# -- interrupts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_first_interrupt_stops_sending_within_5_s_and_its_resume_command_finishes_exactly(
    sig: signal.Signals, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=200, seed=41)
    run_dir = tmp_path / "run"
    with EmbeddedEmulator(catalog=CATALOG_PATH, latency_ms=20) as emu:
        env = job_env({**prefect_env, "FRIGADE_API_KEY": emu.public_key})
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
        args += ["--run-dir", str(run_dir), "--rate", "60", "--concurrency", "8"]
        proc = start_cli(args, env, tmp_path)
        try:
            wait_until(lambda: accepted(emu) >= 100, proc)
            os.kill(proc.pid, sig)
            signalled = time.monotonic()
            while proc.poll() is None and time.monotonic() < signalled + 5.0:
                time.sleep(0.05)
            after_5_s = accepted(emu)
            code = proc.wait(60)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
        stdout, stderr = output(tmp_path)
        assert code == 130, stdout + stderr
        assert accepted(emu) == after_5_s, "still sending 5 s after the interrupt"
        assert took < 30, f"exiting took {took:.1f} s"
        assert "Traceback" not in stderr
        assert emu.public_key not in stdout + stderr
        run = run_json(run_dir)
        assert run["status"] == "interrupted"
        attempts = run["attempts"]
        assert isinstance(attempts, list)
        assert attempts[-1]["stopped_by"] == "InterruptedRunError"
        total = planned(run_dir)
        assert after_5_s < total, "the interrupt came too late to test anything"

        res = cli(resume_command(stderr, "--rate", "400"), env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        stats = emu.stats()
        assert stats["writes_unchanged"] == 0, "a write was sent twice"
        assert stats["writes_accepted"] == total
        assert_state(emu, expected)
        run = run_json(run_dir)
        assert run["status"] == "succeeded"


def test_a_second_ctrl_c_exits_at_once_and_the_resume_is_exact(prefect_env: dict[str, str], tmp_path: Path) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=60, seed=43)
    run_dir = tmp_path / "run"
    # answers take a second: the first Ctrl-C then waits for those in flight, and a second one
    # surely comes while it does
    db = tmp_path / "emu.db"
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db, latency_ms=1000) as emu:
        env = job_env({**prefect_env, "FRIGADE_API_KEY": emu.public_key})
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
        args += ["--run-dir", str(run_dir), "--rate", "60", "--concurrency", "8"]
        proc = start_cli(args, env, tmp_path)
        try:
            wait_until(lambda: accepted(emu) >= 16, proc)
            os.kill(proc.pid, signal.SIGINT)
            wait_until(lambda: "SIGINT: stopping" in output(tmp_path)[1], proc, timeout=10)
            os.kill(proc.pid, signal.SIGINT)
            second = time.monotonic()
            code = proc.wait(10)
            took = time.monotonic() - second
        finally:
            if proc.poll() is None:
                proc.kill()
        stdout, stderr = output(tmp_path)
        assert code == 130, stdout + stderr
        assert took < 2.0, f"the second Ctrl-C took {took:.1f} s"
        assert "SIGINT again: exiting at once. Resume with: frigade-migrate backfill" in stderr
        assert "Traceback" not in stderr
        total = planned(run_dir)
        time.sleep(1.5)  # answers the exit abandoned land now, or never
        assert accepted(emu) < total

        res = cli(resume_command(stderr, "--rate", "400", "--concurrency", "64"), env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        stats = emu.stats()
        assert stats["writes_unchanged"] == 0, "a write was sent twice"
        assert stats["writes_accepted"] == total
    assert_landed_once(db, expected, total)  # read back without the latency


def test_ctrl_c_at_a_terminal_with_prefects_temporary_server_stops_cleanly(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """A terminal sends Ctrl-C to the whole process group: Prefect's temporary server (no
    PREFECT_API_URL) and the embedded emulator must survive it, so the run ends in seconds, cleanly."""
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=200, seed=44)
    run_dir, home = tmp_path / "run", tmp_path / "prefect-home"
    env = job_env({k: v for k, v in prefect_env.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(home)})
    env.pop("PREFECT_API_URL", None)
    args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--run-dir", str(run_dir), "--rate", "40"]
    n = len(list(tmp_path.glob("cli-*.err")))
    with (tmp_path / f"cli-{n}.out").open("wb") as out, (tmp_path / f"cli-{n}.err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        wait_until(lambda: any((run_dir / "outcomes").glob("part-*.parquet")), proc, timeout=240)
        os.killpg(proc.pid, signal.SIGINT)
        signalled = time.monotonic()
        code = proc.wait(60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stdout, stderr = output(tmp_path)
    assert code == 130, stdout + stderr
    assert took < 20, f"exiting took {took:.1f} s"
    assert "Traceback" not in stderr
    assert "EventsWorker" not in stderr
    assert run_json(run_dir)["status"] == "interrupted"
    # nothing of the run is left running: Prefect stopped its temporary server, by its pid
    deadline = time.monotonic() + 15
    while (left := processes_with(f"PREFECT_HOME={home}")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left
    res = cli(resume_command(stderr, "--rate", "400"), job_env(prefect_env), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_landed_once(run_dir / "emulator.db", expected, planned(run_dir))


def processes_with(variable: str) -> list[int]:
    """Pids of this user's processes whose environment holds ``variable`` (NAME=value)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if variable.encode() in environ:
            found.append(int(proc.name))
    return found


# -- outages --------------------------------------------------------------------------------------


def test_an_outage_shorter_than_the_window_is_ridden_out_and_no_user_fails(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=200, seed=45)
    run_dir, db = tmp_path / "run", tmp_path / "emu.db"
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db, latency_ms=10) as emu:
        env = job_env({**prefect_env, "FRIGADE_API_KEY": emu.public_key})
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
        args += ["--run-dir", str(run_dir), "--rate", "100", "--concurrency", "8", "--outage-window", "120"]
        proc = start_cli(args, env, tmp_path)
        try:
            wait_until(lambda: accepted(emu) >= 150, proc)
            # the API goes away mid-write (SIGKILL: answers in flight are lost) for 3 s
            os.kill(emu.pid, signal.SIGKILL)
            emu.stop()
            time.sleep(3.0)
            emu.start()
            code = proc.wait(180)
        finally:
            if proc.poll() is None:
                proc.kill()
        stdout, stderr = output(tmp_path)
        assert code == 0, stdout + stderr
        assert f"cannot reach {emu.url}: " in stderr
        assert "answers again" in stderr
        assert "Traceback" not in stderr
        run = run_json(run_dir)
        assert run["status"] == "succeeded"
        assert run["failed_users"] == 0
        assert emu.stats()["writes_unchanged"] == 0
    assert_landed_once(db, expected, planned(run_dir))


def test_an_outage_past_the_window_stops_with_exit_3_and_resumes_exactly(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=200, seed=47)
    run_dir, db = tmp_path / "run", tmp_path / "emu.db"
    with EmbeddedEmulator(catalog=CATALOG_PATH, db_path=db, latency_ms=10) as emu:
        env = job_env({**prefect_env, "FRIGADE_API_KEY": emu.public_key})
        args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
        args += ["--run-dir", str(run_dir), "--rate", "100", "--concurrency", "8", "--outage-window", "3"]
        proc = start_cli(args, env, tmp_path)
        try:
            wait_until(lambda: accepted(emu) >= 150, proc)
            url = emu.url
            os.kill(emu.pid, signal.SIGKILL)
            emu.stop()
            down = time.monotonic()
            code = proc.wait(120)
            took = time.monotonic() - down
        finally:
            if proc.poll() is None:
                proc.kill()
        stdout, stderr = output(tmp_path)
        assert code == 3, stdout + stderr
        assert took < 30, f"stopping took {took:.1f} s"
        assert re.search(rf"stopped: cannot reach {re.escape(url)}: \w+", stderr), stderr
        assert "resume with: frigade-migrate backfill" in stderr
        assert "Traceback" not in stderr
        assert emu.public_key not in stdout + stderr
        run = run_json(run_dir)
        assert run["status"] == "stopped"
        attempts = run["attempts"]
        assert isinstance(attempts, list)
        assert attempts[-1]["stopped_by"] == "UnreachableError"

        emu.start()  # the API is back (same port, same database): the printed command resumes
        res = cli(resume_command(stderr, "--rate", "400"), env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert emu.stats()["writes_unchanged"] == 0
    assert_landed_once(db, expected, planned(run_dir))


# -- the embedded emulator ------------------------------------------------------------------------


def test_a_run_and_a_sync_on_the_embedded_emulator_resume_and_repeat(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=200, seed=49)
    env = job_env(prefect_env)  # neither a URL nor a key: the embedded emulator
    run_dir = tmp_path / "run"
    args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--run-dir", str(run_dir), "--rate", "60"]
    proc = start_cli(args, env, tmp_path)
    try:
        wait_until(lambda: any((run_dir / "outcomes").glob("part-*.parquet")), proc)
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout, stderr = output(tmp_path)
    assert code == 130, stdout + stderr
    res = cli(resume_command(stderr, "--rate", "400"), env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Conflict" not in res.stdout + res.stderr
    assert "200 of 200 users match the export exactly" in res.stdout
    assert_landed_once(run_dir / "emulator.db", expected, planned(run_dir))

    def sync(name: str) -> subprocess.CompletedProcess[str]:
        args = ["sync", str(export), "--catalog", str(CATALOG_PATH), "--run-dir", str(tmp_path / name)]
        return cli([*args, "--rate", "400"], env, tmp_path)

    res = sync("s1")
    assert res.returncode == 0, res.stdout + res.stderr
    state = tmp_path / "state" / "embedded-emulator"
    assert f"remembered state for embedded emulator: {state.relative_to(tmp_path)}" in res.stdout
    first = planned(tmp_path / "s1")
    assert first > 0
    res = sync("s2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert planned(tmp_path / "s2") == 0, "a second sync of the same export must send nothing"
    assert_landed_once(state / "emulator.db", expected, first)


# -- remembered state per API ---------------------------------------------------------------------


def test_rehearsing_on_one_api_then_running_the_same_command_on_another_works(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=20, seed=51)
    with (
        EmbeddedEmulator(catalog=CATALOG_PATH) as staging,
        EmbeddedEmulator(catalog=CATALOG_PATH, public_key="api_public_production_KEY123") as production,
    ):

        def backfill(emu: EmbeddedEmulator, run: str) -> subprocess.CompletedProcess[str]:
            args = ["backfill", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
            env = job_env({**prefect_env, "FRIGADE_API_KEY": emu.public_key})
            return cli([*args, "--run-dir", str(tmp_path / run), "--rate", "400"], env, tmp_path)

        first = backfill(staging, "r1")
        assert first.returncode == 0, first.stdout + first.stderr
        second = backfill(production, "r2")
        assert second.returncode == 0, second.stdout + second.stderr
        assert_state(production, expected)
        folders = sorted(p for p in (tmp_path / "state").iterdir() if p.is_dir())
        assert len(folders) == 2
        for emu, res in ((staging, first), (production, second)):
            mine = [f for f in folders if json.loads((f / "last_run.json").read_text())["api_url"] == emu.url]
            assert len(mine) == 1
            assert f"remembered state for {emu.url}: {mine[0].relative_to(tmp_path)}" in res.stdout
        for path in (tmp_path / "state").rglob("*"):
            assert production.public_key not in path.name
            if path.is_file():
                assert production.public_key.encode() not in path.read_bytes()
        # and each API's state serves its own syncs: nothing left to send on either
        for emu, run in ((staging, "s1"), (production, "s2")):
            args = ["sync", str(export), "--catalog", str(CATALOG_PATH), "--api-url", emu.url]
            env = job_env({**prefect_env, "FRIGADE_API_KEY": emu.public_key})
            res = cli([*args, "--run-dir", str(tmp_path / run)], env, tmp_path)
            assert res.returncode == 0, res.stdout + res.stderr
            assert planned(tmp_path / run) == 0
        assert staging.stats()["writes_unchanged"] == production.stats()["writes_unchanged"] == 0
