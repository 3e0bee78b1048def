"""EmbeddedEmulator: a real child process that starts, answers, survives restarts on the same database
and never outlives its owner."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from emulator.embedded import EmbeddedEmulator, EmulatorStartError
from frigade.catalog import parse_catalog
from frigade.rules import Action
from tests.e2e.servers import gone
from tests.emulator._http import STEPS, read, send, state_of

pytestmark = pytest.mark.slow


def test_state_and_history_survive_a_restart_on_the_same_database(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    with (
        EmbeddedEmulator(db_path=db) as first,
        httpx.Client(base_url=first.url, headers=first.headers(False)) as c,
    ):
        send(c, "u", Action.COMPLETED_STEP, STEPS[0], at="2024-01-01T00:00:00Z")
        send(c, "u", Action.STARTED_STEP, STEPS[1], at="2024-01-02T00:00:00Z")
        expected = state_of(read(c, "u"))
        history = first.history("u")
        old_pid = first.pid
    assert gone(old_pid)
    assert db.exists()

    with (
        EmbeddedEmulator(db_path=db) as second,
        httpx.Client(base_url=second.url, headers=second.headers(False)) as c,
    ):
        assert second.pid != old_pid
        assert state_of(read(c, "u")) == expected
        assert second.history("u") == history
        assert second.stats()["distinct_users"] == 1
        after = state_of(send(c, "u", Action.COMPLETED_STEP, STEPS[1]))
        assert after.step(STEPS[0]).completed
        assert after.step(STEPS[1]).completed


def test_restart_keeps_the_url_and_the_data(tmp_path: Path) -> None:
    with EmbeddedEmulator() as emu:
        url, pid = emu.url, emu.pid
        with httpx.Client(base_url=emu.url, headers=emu.headers(False)) as c:
            send(c, "u", Action.COMPLETED_FLOW)
        emu.restart()
        assert emu.pid != pid
        assert emu.running
        assert emu.url == url
        assert gone(pid)
        with httpx.Client(base_url=emu.url, headers=emu.headers(False)) as c:
            assert state_of(read(c, "u")).completed
        emu.stop()
        assert not emu.running
        with pytest.raises(RuntimeError):
            _ = emu.url


def test_the_child_is_stopped_when_the_body_raises() -> None:
    pids: list[int] = []

    def body() -> None:
        with EmbeddedEmulator() as emu:
            pids.append(emu.pid)
            assert psutil.pid_exists(emu.pid)
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        body()
    assert gone(pids[0])


def test_a_child_that_cannot_start_gives_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flows:\n  - slug: f\n", encoding="utf-8")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(EmulatorStartError, match="exited with code 2") as raised:
        EmbeddedEmulator(catalog=bad, startup_timeout=20).__enter__()
    assert "'steps' must be a non-empty list" in str(raised.value)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()


def test_a_catalog_object_is_served(tmp_path: Path) -> None:
    catalog = parse_catalog("flows:\n  - slug: f\n    version: 3\n    steps: [{id: a, title: A}, {id: b}]\n", "inline")
    with (
        EmbeddedEmulator(catalog=catalog) as emu,
        httpx.Client(base_url=emu.url, headers=emu.headers(False)) as c,
    ):
        flows = c.get("/v1/public/flows").json()["data"]
        assert [(f["slug"], f["version"]) for f in flows] == [("f", 3)]
        assert state_of(send(c, "u", Action.COMPLETED_STEP, "a", flow="f"), "f").current_step_id == "b"


def test_the_child_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from emulator.embedded import EmbeddedEmulator\n"
        "emu = EmbeddedEmulator().start()\n"
        "print(emu.pid, emu.log_path.parent, flush=True)\n"
        "os._exit(0)  # no cleanup at all: only --exit-with-parent can stop the child now\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    pid, workdir = parent.stdout.split()
    try:
        assert gone(int(pid), within=15), "the orphaned emulator kept running"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # its owner died before it could clean up


def test_relative_paths_are_taken_from_the_caller_s_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("cat.yaml").write_text("flows:\n  - slug: f\n    steps: [{id: a}]\n", encoding="utf-8")
    with EmbeddedEmulator(catalog="cat.yaml", db_path="runs/emu.db") as emu, emu.client() as c:
        assert [f["slug"] for f in c.get("/v1/public/flows").json()["data"]] == ["f"]
    assert (tmp_path / "runs" / "emu.db").exists()
