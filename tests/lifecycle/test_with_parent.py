"""A detached child (Prefect's temporary server) stops once its owner is gone, however it went, and
runs as it would have otherwise while the owner lives."""

from __future__ import annotations

import subprocess
import sys

from lifecycle.with_parent import watched
from tests.e2e.servers import ROOT, gone


def test_only_a_module_command_is_run_under_the_watch() -> None:
    assert watched(["python", "-m", "uvicorn", "--port", "1"], 42) == [
        "python",
        "-m",
        "lifecycle.with_parent",
        "42",
        "uvicorn",
        "--port",
        "1",
    ]
    assert watched(["python", "server.py"], 42) is None
    assert watched(["uvicorn"], 42) is None


def test_a_detached_module_child_exits_when_its_owner_is_killed() -> None:
    # the owner starts a server as Prefect starts its own (a module, in a session of its own), then
    # dies without any clean-up, as after kill -9: a session of its own would outlive that
    script = (
        "import os, sys, time\n"
        "from lifecycle.interrupts import DetachedPopen\n"
        "child = DetachedPopen(args=[sys.executable, '-m', 'http.server', '0', '--bind', '127.0.0.1'],\n"
        "                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "time.sleep(1.0)\n"
        "print(child.pid, child.poll(), child.args[2], flush=True)\n"
        "os._exit(0)\n"
    ).replace("import os, sys, time", "import os, subprocess, sys, time")
    owner = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    pid, running, module = owner.stdout.split()
    assert (running, module) == ("None", "lifecycle.with_parent"), "it serves, watched, while its owner lives"
    assert gone(int(pid), within=10), "the detached child outlived its owner"
