"""The console's signal handling, in this process: the first signal only (a second exits at once,
which the end-to-end tests check in a subprocess)."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from lifecycle import interrupts

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signal handlers need the main thread"
)


def deliver(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.01)  # the handler runs in this thread at the next bytecode boundary


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_calls_the_watcher_and_the_handlers_are_restored(sig: signal.Signals) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    heard: list[str] = []
    with interrupts.handle_signals(["backfill", "e.csv"]):
        with interrupts.watch(heard.append, Path("runs/r1")):
            deliver(sig)
        assert heard == [sig.name]
        assert interrupts.requested() == sig.name
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_before_the_run_watches_reaches_it_when_it_does() -> None:
    heard: list[str] = []
    with interrupts.handle_signals(["backfill", "e.csv"]):
        deliver(signal.SIGINT)
        with interrupts.watch(heard.append):
            assert heard == ["SIGINT"]


def test_unarmed_nothing_is_changed() -> None:
    """A Prefect deployment runs the flow without the console: its worker's own handling applies."""
    before = signal.getsignal(signal.SIGTERM)
    with interrupts.watch(lambda _: None):
        assert signal.getsignal(signal.SIGTERM) is before
    assert interrupts.resume_command("runs/r1") is None


def test_the_resume_command_repeats_the_command_with_its_run_folder_and_never_the_key() -> None:
    argv = ["sync", "my export.csv", "--api-key", "api_private_SECRET", "--run-dir", "old", "--rate", "5"]
    with interrupts.handle_signals(argv):
        command = interrupts.resume_command(Path("runs/2024 x"))
    assert command is not None
    assert "SECRET" not in command
    assert command == (
        "frigade-migrate sync 'my export.csv' --api-key \"$FRIGADE_API_KEY\" --rate 5 --run-dir 'runs/2024 x'"
    )
    assert shlex.split(command)[-2:] == ["--run-dir", "runs/2024 x"]
    with interrupts.handle_signals(["backfill", "e.csv", "--api-key=api_private_SECRET", "--run-dir=r"]):
        command = interrupts.resume_command("r2")
    assert command == 'frigade-migrate backfill e.csv --api-key "$FRIGADE_API_KEY" --run-dir r2'


def test_the_resume_command_names_the_program_as_the_shell_can_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "venv" / "bin" / "frigade-migrate"
    monkeypatch.setattr(sys, "argv", [str(script), "backfill", "e.csv"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with interrupts.handle_signals(["backfill", "e.csv"]):
        assert interrupts.resume_command("runs/r") == f"{script} backfill e.csv --run-dir runs/r"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(script.parent))
    with interrupts.handle_signals(["backfill", "e.csv"]):
        assert interrupts.resume_command("runs/r") == "frigade-migrate backfill e.csv --run-dir runs/r"
