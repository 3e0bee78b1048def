"""Ctrl-C and SIGTERM for the console commands.

The first signal stops the run cleanly: nothing new is sent, outcomes are flushed, the attempt is
marked ``interrupted`` in run.json and the exact resume command is printed (exit code 130). A second
signal exits at once (the run folder's dispatch journal makes that resumable too, as after a kill).

The command arms this module for the whole run (``handle_signals``, through
``flows.console.run_interruptible``); the run registers what to do on
the first signal (``watch``). Prefect's flow engine takes SIGTERM over while a flow runs, so ``watch``,
called inside the flow, takes it back. Unarmed (a Prefect deployment) nothing is changed: there the
worker's own cancellation applies.

A Ctrl-C at a terminal goes to the whole process group. Prefect's temporary API server (started when
no ``PREFECT_API_URL`` is set) is a child in that group, and would die of it, leaving the run unable to
record its end: Prefect then retries for minutes, printing event dumps. So, armed, that server is
started in a session of its own (``DetachedPopen``; stopped by Prefect at exit, or by a second signal,
and, under ``lifecycle.with_parent``, a moment after this process dies without stopping it).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from lifecycle.exitcodes import ExitCode
from lifecycle.with_parent import watched

__all__ = ["DetachedPopen", "handle_signals", "requested", "resume_command", "watch"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: options whose value is a secret: the resume command names the variable instead
_SECRET_OPTIONS = ("--api-key",)


@dataclass
class _State:
    armed: bool = False
    argv: list[str] = field(default_factory=list)
    signals: int = 0
    first: str | None = None
    callbacks: list[Callable[[str], None]] = field(default_factory=list)
    run_dir: Path | None = None
    #: children started in a session of their own, which a second signal must stop itself
    detached: list[subprocess.Popen[Any]] = field(default_factory=list)


_state = _State()


@contextlib.contextmanager
def handle_signals(argv: Sequence[str]) -> Iterator[None]:
    """For the whole console command: SIGINT and SIGTERM come here. ``argv`` (without the program
    name) is what the resume command repeats."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in _SIGNALS}
    _state.armed, _state.argv = True, list(argv)
    _state.signals, _state.first, _state.run_dir = 0, None, None
    try:
        yield
    finally:
        _state.armed, _state.argv = False, []
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def watch(on_first: Callable[[str], None], run_dir: Path | None = None) -> Iterator[None]:
    """While the block runs, the first signal calls ``on_first(signal name)`` (at once when one came
    before). Called from a signal handler: ``on_first`` must only schedule work, e.g. with
    ``loop.call_soon_threadsafe``."""
    if not _state.armed:
        yield
        return
    taken: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        taken = {sig: signal.signal(sig, _on_signal) for sig in _SIGNALS}
    _state.callbacks.append(on_first)
    _state.run_dir = run_dir
    if _state.first is not None:
        on_first(_state.first)
    try:
        yield
    finally:
        _state.callbacks.remove(on_first)
        _state.run_dir = None
        for sig, handler in taken.items():
            signal.signal(sig, handler)


def requested() -> str | None:
    """The name of the first signal received, if any."""
    return _state.first


def resume_command(run_dir: Path | str) -> str | None:
    """The command that resumes ``run_dir``: this command's own words with ``--run-dir run_dir``, and
    the key named by its variable, never written out. None when not run from the console."""
    if not _state.argv:
        return None
    words: list[str] = []
    args = iter(_state.argv)
    for arg in args:
        name = arg.split("=", 1)[0]
        if name == "--run-dir":
            if "=" not in arg:
                next(args, None)
            continue
        if name in _SECRET_OPTIONS:
            if "=" not in arg:
                next(args, None)
            words.append(f'{name} "$FRIGADE_API_KEY"')
            continue
        words.append(shlex.quote(arg))
    return " ".join([_program(), *words, "--run-dir", shlex.quote(str(run_dir))])


def _program() -> str:
    """``frigade-migrate`` when the shell finds it; else the script this command was started as (after
    the quick start that is ``.venv/bin/frigade-migrate``, not on PATH), so the command runs as printed."""
    argv0 = Path(sys.argv[0])
    if shutil.which("frigade-migrate") is None and argv0.name == "frigade-migrate":
        return shlex.quote(str(argv0))
    return "frigade-migrate"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    _state.signals += 1
    if _state.signals == 1:
        _state.first = name
        _say(
            f"\n{name}: stopping. Nothing new is sent; outcomes are being saved and the run marked "
            "interrupted. Press Ctrl-C (or send the signal) again to exit at once.\n"
        )
        for callback in list(_state.callbacks):
            callback(name)
        return
    resume = resume_command(_state.run_dir) if _state.run_dir is not None else None
    _say(f"\n{name} again: exiting at once." + (f" Resume with: {resume}\n" if resume else "\n"))
    for child in _state.detached:
        with contextlib.suppress(OSError):
            child.terminate()
    os._exit(ExitCode.INTERRUPTED)


class DetachedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """A ``Popen`` whose child runs in a session of its own (a terminal's Ctrl-C does not reach it),
    stopped by its pid on a second signal. A ``python -m MODULE`` child runs under
    ``lifecycle.with_parent``, which stops it once this process is gone, however it went: outside
    this process's group, a kill of the group would not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("start_new_session", True)
        command = kwargs.get("args", args[0] if args else None)
        wrapped = watched(command, os.getpid()) if isinstance(command, list) else None
        if wrapped is not None:
            if "args" in kwargs:
                kwargs["args"] = wrapped
            else:
                args = (wrapped, *args[1:])
        super().__init__(*args, **kwargs)
        _state.detached.append(self)


def _say(text: str) -> None:
    # os.write: safe in a signal handler, where a buffered stream may be mid-write
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))
