"""The exit codes of every command (cli.md): one enum, so a code means the same wherever it is set."""

from __future__ import annotations

from enum import IntEnum


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
