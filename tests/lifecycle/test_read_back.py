"""A resume reads back the users a crash may have left in flight, many at a time, before sending."""

from __future__ import annotations

import asyncio

import polars as pl
import pytest

from frigade.errors import AuthError, ConnectFailedError
from frigade.models import UserFlowStates
from lifecycle.execute import _groups, _read_back
from tests.frigade.vtime import run_virtual


class Reader:
    def __init__(self, failing: str | None = None, stop_at: str | None = None) -> None:
        self.reading = 0
        self.most = 0
        self.asked: list[tuple[str, str | None]] = []
        self.failing, self.stop_at = failing, stop_at

    async def read_state(self, user_id: str, group_id: str | None = None) -> UserFlowStates:
        self.asked.append((user_id, group_id))
        self.reading += 1
        self.most = max(self.most, self.reading)
        try:
            await asyncio.sleep(0.3)
        finally:
            self.reading -= 1
        if user_id == self.failing:
            raise ConnectFailedError("connection refused")
        if user_id == self.stop_at:
            raise AuthError("the API key was refused")
        return UserFlowStates()


def test_read_backs_run_many_at_once_and_a_failed_one_is_that_user_s() -> None:
    groups = {f"u{i:03d}": None for i in range(200)} | {"grouped": "g1"}
    reader = Reader(failing="u007")

    async def main() -> tuple[dict[str, UserFlowStates | Exception], float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        got = await _read_back(reader, groups, 64)  # type: ignore[arg-type]
        return dict(got), loop.time() - start

    got, took = run_virtual(main())
    assert set(got) == set(groups)
    assert isinstance(got["u007"], ConnectFailedError)
    assert all(isinstance(v, UserFlowStates) for u, v in got.items() if u != "u007")
    assert reader.most == 64
    # 201 reads of 300 ms, 64 at a time: four rounds, not 201
    assert took == pytest.approx(1.2)
    assert ("grouped", "g1") in reader.asked


def test_a_stop_during_the_read_backs_is_the_run_s() -> None:
    reader = Reader(stop_at="u003")
    with pytest.raises(AuthError):
        run_virtual(_read_back(reader, {f"u{i:03d}": None for i in range(10)}, 4))  # type: ignore[arg-type]


def test_the_group_read_is_the_first_pending_request_s() -> None:
    pending = pl.DataFrame({"user_id": ["a", "a", "b", "c"], "group_id": ["g1", "g2", None, "g3"], "seq": [0, 1, 0, 0]})
    assert _groups(pending, frozenset({"a", "b"})) == {"a": "g1", "b": None}
    assert _groups(pending, frozenset()) == {}
