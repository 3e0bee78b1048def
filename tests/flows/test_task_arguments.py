"""Prefect walks a task's arguments for futures, rebuilding what it finds, at every task run. A push
batch's arguments hold maps of every user, and a run has one batch per few thousand requests: walked,
they cost O(users) per batch. They are handed over as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_inputs_sync

from flows.backfill import as_is


class _Counting(dict[str, int]):
    walked = 0

    def items(self) -> Any:
        self.walked += 1
        return super().items()


@dataclass
class _Work:
    user_index: _Counting


def test_a_batch_tasks_arguments_reach_it_unwalked_and_unchanged() -> None:
    work = _Work(_Counting({f"u{i}": i for i in range(100)}))
    resolved = resolve_inputs_sync({"work": as_is(work)})
    assert resolved["work"] is work
    assert collect_task_run_inputs_sync(as_is(work)) == set()
    assert work.user_index.walked == 0
    # as a plain argument Prefect walks into it (so the check above can fail)
    assert resolve_inputs_sync({"work": work})["work"] is work
    assert work.user_index.walked > 0
