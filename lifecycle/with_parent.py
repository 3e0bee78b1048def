"""``python -m lifecycle.with_parent PID MODULE ARGS...``: run ``python -m MODULE ARGS...`` in this
process, and stop it (SIGTERM, as its owner would) once process PID is no longer its parent.

Prefect's temporary API server is started in a session of its own (``lifecycle.interrupts``), so
that a terminal's Ctrl-C does not kill it while the run records its end; but then nothing stops it
when its owner dies without cleaning up (``kill -9``, the OOM killer, a CI timeout): it would keep
its port and memory for ever. Run under this module, it exits a moment after its owner does. Only
the standard library is imported before the module runs: the server's own start is unchanged.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
from collections.abc import Sequence

#: how often the parent is checked: a stray server lives at most this long after its owner
POLL_S = 0.5


def watched(args: Sequence[str], parent: int) -> list[str] | None:
    """``[python, -m, MODULE, ...]`` as run under this module for ``parent``; None for any other command."""
    if len(args) < 3 or args[1] != "-m":
        return None
    return [args[0], "-m", __name__, str(parent), *args[2:]]


def _watch(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: Sequence[str]) -> None:
    parent, module, *rest = argv
    if os.getppid() != int(parent):
        # the owner died before this process even started
        raise SystemExit(0)
    _watch(int(parent))
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
