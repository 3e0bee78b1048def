"""A flow run from a console command: its signals handled by ``lifecycle.interrupts``, and Prefect's
temporary API server kept out of the terminal's process group (a Ctrl-C there would kill it, and the
run could not record its end)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import types
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from lifecycle.interrupts import DetachedPopen, handle_signals

T = TypeVar("T")


def run_interruptible(main: Coroutine[Any, Any, T], argv: Sequence[str] | None = None) -> T:
    """``asyncio.run(main)`` for a console command, its signals handled (``argv``: the command's words
    for the resume command, by default this process's own)."""
    _detach_prefect_server()
    with handle_signals(sys.argv[1:] if argv is None else argv):
        return asyncio.run(main)


def _detach_prefect_server() -> None:
    """Prefect's temporary server module starts its child with ``subprocess.Popen``: give that module
    (and only it) a Popen that starts the child in a session of its own."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return  # a Prefect server of the user's own: no temporary one is started
    from prefect.server.api import server

    if getattr(server, "subprocess", None) is subprocess:
        detached = types.SimpleNamespace(**{**vars(subprocess), "Popen": DetachedPopen})
        setattr(server, "subprocess", detached)  # noqa: B010 - typed as the module, deliberately not
