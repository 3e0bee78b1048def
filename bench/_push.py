"""Shared by the push benchmarks: generated push work, latency capture, CPU time.

The work is what ``frigade-migrate backfill`` hands to ``frigade.push.push``: one ``UserWork`` per user,
here a finished onboarding checklist (COMPLETED_STEP for each step, then COMPLETED_FLOW), every write
valid and state-changing, so the emulator does a real write for each request.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from emulator.sample import sample_catalog
from frigade.client import FrigadeClient
from frigade.push import PlannedRequest, UserWork
from frigade.rules import Action, initial_state

FLOW = "flow_onboarding"
_T0 = datetime(2024, 1, 1, tzinfo=UTC)


@functools.cache
def flow_steps() -> tuple[str, ...]:
    flow = sample_catalog().get(FLOW)
    assert flow is not None
    return flow.step_ids


def user_requests(prefix: str, n: int) -> list[tuple[str, Action, str | None, str]]:
    """(user, action, step, createdAt) of user ``n``: every step completed, then the flow."""
    user = f"{prefix}-{n:07d}"
    steps = flow_steps()
    acts: list[tuple[Action, str | None]] = [(Action.COMPLETED_STEP, s) for s in steps]
    acts.append((Action.COMPLETED_FLOW, None))
    at = _T0 + timedelta(minutes=n)
    return [
        (user, a, s, (at + timedelta(seconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        for i, (a, s) in enumerate(acts)
    ]


def requests_per_user() -> int:
    return len(flow_steps()) + 1


def user_work(prefix: str, n: int) -> UserWork:
    start = {FLOW: initial_state(flow_steps())}
    reqs = tuple(
        PlannedRequest(
            request_id=f"{u}|{FLOW}|{seq}",
            user_id=u,
            group_id=None,
            flow_slug=FLOW,
            seq=seq,
            action=a,
            step_id=s,
            created_at=at,
            data=None,
        )
        for seq, (u, a, s, at) in enumerate(user_requests(prefix, n))
    )
    return UserWork(user_id=reqs[0].user_id, requests=reqs, start=start)


def work_list(prefix: str, users: int) -> list[UserWork]:
    return [user_work(prefix, n) for n in range(users)]


def work_until(prefix: str, deadline: float, max_users: int) -> Iterator[UserWork]:
    """Users until the monotonic ``deadline`` or ``max_users``, whichever comes first."""
    for n in range(max_users):
        if time.monotonic() >= deadline:
            return
        yield user_work(prefix, n)


def body(user: str, action: Action, step: str | None, at: str) -> dict[str, Any]:
    """The wire body the job sends for one write (the peers send the same)."""
    out: dict[str, Any] = {"userId": user, "flowSlug": FLOW, "actionType": action.value, "createdAt": at}
    if step is not None:
        out["stepId"] = step
    return out


@dataclass
class Latencies:
    """HTTP round trips (request sent to response headers), seconds."""

    samples: list[float] = field(default_factory=list)

    def hooks(self) -> dict[str, list[Any]]:
        async def on_request(request: httpx.Request) -> None:
            request.extensions["bench_t0"] = time.perf_counter()

        async def on_response(response: httpx.Response) -> None:
            t0 = response.request.extensions.get("bench_t0")
            if isinstance(t0, float):
                self.samples.append(time.perf_counter() - t0)

        return {"request": [on_request], "response": [on_response]}

    def attach(self, client: FrigadeClient) -> bool:
        """Hook into the client's connection pools. They are private: when the client is rebuilt
        without them, latency is simply not reported (the benchmark still runs)."""
        pools = getattr(client, "_pools", None)
        if not isinstance(pools, list) or not all(isinstance(p, httpx.AsyncClient) for p in pools):
            return False
        for pool in pools:
            pool.event_hooks = self.hooks()
        return True


class CpuTimer:
    """This process's CPU time (all threads) and wall time across a block."""

    def __enter__(self) -> CpuTimer:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0
