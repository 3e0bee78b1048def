"""Prefect walks a task's arguments for futures, rebuilding what it finds, at every task run. A push
batch's arguments hold maps of every user, and a run has one batch per few thousand requests: walked,
they cost O(users) per batch. They are handed over as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.utilities.annotations import quote
from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_inputs_sync

from flows.backfill import call_unwalked


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
    resolved = resolve_inputs_sync({"work": quote(work)})
    assert resolved["work"] is work
    assert collect_task_run_inputs_sync(quote(work)) == set()
    assert work.user_index.walked == 0
    # as a plain argument Prefect walks into it (so the check above can fail)
    assert resolve_inputs_sync({"work": work})["work"] is work
    assert work.user_index.walked > 0


def test_call_unwalked_quotes_every_argument_and_returns_the_tasks_result() -> None:
    seen: list[object] = []

    def fake_task(*args: object, **kwargs: object) -> str:
        seen.extend([*args, *kwargs.values()])
        return "done"

    work = _Work(_Counting({"u": 1}))
    assert call_unwalked(fake_task, work, 3, n="x") == "done"  # type: ignore[arg-type]
    assert all(isinstance(a, quote) for a in seen)
    assert [a.unquote() for a in seen] == [work, 3, "x"]  # type: ignore[attr-defined]
