"""The collector during a push: lean young collections and the objects from before it frozen, then
back as it was; cycles made during the push are still collected."""

from __future__ import annotations

import gc

from lifecycle.heap import YOUNG, push_heap


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


def test_the_collector_is_restored_after_a_push_that_raises() -> None:
    before = gc.get_threshold()
    try:
        with push_heap():
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
