"""Off a terminal the push's progress is log lines: one when it starts, one every interval (a stalled
push included), one when it ends; each with requests and users done of planned, rate, ETA, errors."""

from __future__ import annotations

import time

from frigade.push import Outcome, OutcomeKind
from lifecycle.progress import LEGEND, LogProgress


def outcome(user: str, kind: OutcomeKind = "sent") -> Outcome:
    return Outcome(
        request_id=f"{user}-1",
        user_id=user,
        flow_slug="flow_a",
        seq=1,
        status=201,
        attempts=1,
        ok=kind == "sent",
        error_class=None,
        message=None,
        outcome=kind,
        at=0.0,
    )


def test_lines_at_start_every_interval_and_at_the_end() -> None:
    lines: list[str] = []
    with LogProgress(4, 20, {"u1": 2, "u2": 2}, lines.append, every_s=0.05) as progress:
        progress.advance(outcome("u1"))
        progress.advance(outcome("u1"))
        progress.advance(outcome("u2", "rejected"))
        deadline = time.monotonic() + 5
        # nothing answers meanwhile: the lines go on, so a stalled push shows in the log
        while len(lines) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert lines[0] == LEGEND
    assert lines[1].startswith("push: 0/4 req  0/2 users")
    assert len(lines) >= 5
    assert any("3/4 req  1/2 users" in line for line in lines[2:-1])
    assert lines[-1].startswith("push: 3/4 req  1/2 users")
    assert lines[-1].endswith("errors 1")
    assert "(limit 20)" in lines[-1]
    assert "ETA" in lines[-1]


def test_no_line_but_the_first_and_last_within_one_interval() -> None:
    lines: list[str] = []
    with LogProgress(1, 5, {"u1": 1}, lines.append, every_s=60, label="shard 2/4", legend=False) as progress:
        progress.advance(outcome("u1"))
    assert [line.split("  ")[0] for line in lines] == ["shard 2/4: 0/1 req", "shard 2/4: 1/1 req"]


def test_nothing_to_push_says_nothing() -> None:
    lines: list[str] = []
    with LogProgress(0, 5, {}, lines.append, every_s=0.01):
        time.sleep(0.05)
    assert lines == []
