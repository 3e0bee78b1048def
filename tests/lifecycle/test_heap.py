"""The collector during a push: lean young collections and the objects from before it frozen, then
back as it was; cycles made during the push are still collected; overlapping pushes share one period."""

from __future__ import annotations

import gc

import pytest

from lifecycle.heap import YOUNG, lean_collector, push_heap


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
