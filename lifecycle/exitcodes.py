"""The exit codes of every command (README, "Exit codes"): one enum, imported by lifecycle/, flows/ and
cli/ alike; it imports nothing, so that any of them may use it."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    OK = 0
    #: the run finished, but failures passed --max-failures or reconciliation found mismatches
    FAILURES = 1
    #: bad input or usage: nothing was sent
    INPUT = 2
    #: stopped by the API (bad key, MAU cap) or the API unreachable past the outage window: resumable
    STOPPED = 3
    #: Ctrl-C or SIGTERM: resumable
    INTERRUPTED = 130
