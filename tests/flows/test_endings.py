"""A run flow's state says how the run ended, in the Prefect UI too; its data is the result either way."""

from __future__ import annotations

from typing import Any

import pytest

from flows.backfill import _ending
from lifecycle.exitcodes import ExitCode


@pytest.mark.parametrize(
    ("code", "state"),
    [(ExitCode.FAILURES, "FAILED"), (ExitCode.STOPPED, "FAILED"), (ExitCode.INTERRUPTED, "CANCELLED")],
)
def test_a_run_that_did_not_succeed_ends_in_a_state_carrying_its_result(code: ExitCode, state: str) -> None:
    result: dict[str, Any] = {"exit_code": int(code), "run_dir": "runs/r", "status": "stopped", "message": "MAU cap"}
    ended = _ending(result)
    assert not isinstance(ended, dict)
    assert ended.type.name == state
    assert ended.message == "MAU cap"
    assert ended.data == result


def test_a_run_that_succeeded_returns_its_result() -> None:
    result: dict[str, Any] = {"exit_code": 0, "run_dir": "runs/r", "status": "succeeded"}
    assert _ending(result) is result


def test_a_failed_run_without_a_message_points_at_its_report() -> None:
    ended = _ending({"exit_code": 1, "run_dir": "runs/r", "status": "failed"})
    assert not isinstance(ended, dict)
    assert ended.message == "the run ended failed, exit code 1: see its report.md"
