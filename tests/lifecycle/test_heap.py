"""The collector during a push: lean young collections and the objects from before it frozen, then
back as it was; cycles made during the push are still collected; overlapping pushes share one period.
A run's process gives the pages polars freed back soon after."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.heap import JEMALLOC_ENV, JEMALLOC_SETTINGS, YOUNG, lean_collector, push_heap


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_a_push_freezes_what_exists_tunes_young_collections_and_restores_both() -> None:
    before = gc.get_threshold()
    with push_heap():
        assert gc.get_threshold() == (YOUNG, *before[1:])
        assert gc.get_freeze_count() > 0
        _Node()  # a cycle, unreachable at once
        assert gc.collect() >= 1
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_overlapping_pushes_keep_the_period_until_the_last_ends() -> None:
    before = gc.get_threshold()
    first, second = push_heap(), push_heap()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == YOUNG
    assert gc.get_freeze_count() > 0
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_collector_is_restored_after_a_block_that_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), push_heap(), lean_collector():
        raise RuntimeError("stop")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


_FREE_A_FRAME = """
import time
import {package}
import polars as pl

def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) // 1024 for line in fh if line.startswith("VmRSS:"))

before = rss()
frame = pl.DataFrame({{"n": pl.int_range(0, 4_000_000, eager=True)}}).with_columns(pl.col("n").cast(pl.String))
grew = rss() - before
del frame
deadline = time.monotonic() + {deadline_s}
while rss() - before > grew / 4 and time.monotonic() < deadline:
    time.sleep(0.02)
print(grew, rss() - before)
"""


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != JEMALLOC_ENV} | env
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("package", ["cli", "flows"])
def test_a_run_process_gives_a_freed_frame_back_while_it_idles(package: str) -> None:
    """The console command's process and a flow run's: a frame freed is memory given back soon, with
    no more allocations to set it off (a push hardly allocates with polars); polars' own settings keep
    it 0.5 s, then 1 s more, and only give it back when polars next allocates. A second and a half
    leaves room for a loaded machine."""
    grew, held = (int(n) for n in _run(_FREE_A_FRAME.format(package=package, deadline_s=1.5)).split())
    assert grew > 60, grew
    assert held < grew / 4, (grew, held)


def test_a_run_process_started_by_one_that_loaded_polars_has_its_own_settings_last() -> None:
    """polars writes its settings into the environment when it loads (pages kept 0.5 s, then 1 s
    more): a run's process started by such a process (a benchmark, a worker) inherits them, and its
    own must come after them, where jemalloc lets the last of each option win."""
    inherited = _run(f"import os, polars; print(os.environ[{JEMALLOC_ENV!r}])").strip()
    assert "decay" in inherited
    seen = _run(f"import cli, os, polars; print(os.environ[{JEMALLOC_ENV!r}])", **{JEMALLOC_ENV: inherited})
    assert seen.strip().endswith(JEMALLOC_SETTINGS), seen


_LOAD_ORDER = """
import sys
{load}
import polars
names = list(sys.modules)
print(names.index("lifecycle.heap") < names.index("polars"))
"""
_SCRIPT = str(Path(__file__).resolve().parents[2] / "flows" / "backfill.py")


@pytest.mark.parametrize(
    "load",
    [
        "import cli",
        "import flows",
        f"from prefect.utilities.importtools import load_script_as_module\nload_script_as_module({_SCRIPT!r})",
    ],
    ids=["console", "flows", "deployment"],
)
def test_a_run_process_has_its_allocator_settings_before_polars_loads(load: str) -> None:
    """The console command, a flow imported as ``flows.backfill``, and a deployment's flow run, which
    Prefect loads from ``flows/backfill.py`` as a script of its own: the settings come first."""
    assert _run(_LOAD_ORDER.format(load=load)).strip() == "True"
