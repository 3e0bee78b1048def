"""A stop that comes before any batch could start (a Ctrl-C while planning) ends the push as a stop,
not as a push that sent nothing and then fails reconciliation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import polars as pl
import pytest

from emulator.sample import sample_catalog
from flows.backfill import push_batches, read_baseline_task
from frigade.client import FrigadeClient
from frigade.errors import InterruptedRunError
from lifecycle.execute import Work
from lifecycle.job import Job
from lifecycle.progress import PushProgress
from lifecycle.runfolder import DispatchJournal, RunFolder
from lifecycle.settings import Settings
from transforms.analysis import Analysis
from transforms.work import start_states


def test_an_interrupt_before_the_first_batch_ends_the_push_as_an_interrupt(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.create()
    job = Job([tmp_path / "e.csv"], Settings.resolve({}, env={}), folder)
    pending = pl.DataFrame({"request_id": ["u|f|0"], "user_id": ["u"], "flow_slug": ["flow_onboarding"], "seq": [0]})
    work = Work(pending, start_states(sample_catalog()), {}, frozenset(), {"u": 0})

    async def push() -> None:
        # nothing listens there: the client is stopped before it could send anything
        async with FrigadeClient("http://127.0.0.1:9", None, rate=10) as client:
            client.interrupt("interrupted by SIGINT")
            with PushProgress(total=1, rate=10, user_requests={"u": 1}) as progress:
                await push_batches(job, work, client, DispatchJournal(folder, 1, 1), progress)

    with pytest.raises(InterruptedRunError, match="SIGINT"):
        asyncio.run(push())


def test_a_stop_while_reading_the_users_state_is_returned_by_its_task_not_raised(tmp_path: Path) -> None:
    """Raised, Prefect would log the task's failure with a traceback in a worker's log; the flow
    raises it once the task has returned, and the run ends on its one-line message."""
    folder = RunFolder(tmp_path / "run")
    folder.create()
    job = Job([tmp_path / "e.csv"], Settings.resolve({}, env={}), folder)
    analysis = cast(Analysis, SimpleNamespace(targets=SimpleNamespace(flows=pl.DataFrame({"user_id": ["u"]}))))

    async def read() -> object:
        async with FrigadeClient("http://127.0.0.1:9", None, rate=10) as client:
            client.interrupt("interrupted by SIGTERM")
            return await read_baseline_task.fn(job, analysis, client)

    stop = asyncio.run(read())
    assert isinstance(stop, InterruptedRunError)
    assert "SIGTERM" in str(stop)
