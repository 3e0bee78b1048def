"""The push stage: send planned requests, each user's strictly in order, many users at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from frigade.client import UNSENDABLE, FrigadeClient, WriteResult
from frigade.errors import RequestRejectedError, StopRunError
from frigade.models import FlowStateWrite, UserFlowStates, flow_state_from_wire
from frigade.rules import Action, FlowState, RuleError, apply

__all__ = ["Outcome", "OutcomeKind", "PlannedRequest", "PushSummary", "UserWork", "push"]

OutcomeKind = Literal["sent", "rejected", "held", "failed", "resolved_applied"]


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    request_id: str
    user_id: str
    group_id: str | None
    flow_slug: str
    seq: int
    action: Action
    step_id: str | None
    created_at: str | None
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class UserWork:
    """One user's requests in send order, and each flow's state before the first of them."""

    user_id: str
    requests: tuple[PlannedRequest, ...]
    start: Mapping[str, FlowState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    request_id: str
    user_id: str
    flow_slug: str
    seq: int
    status: int | None
    attempts: int
    ok: bool
    error_class: str | None
    message: str | None
    outcome: OutcomeKind
    at: float


@dataclass(frozen=True, slots=True)
class PushSummary:
    """Counts of outcomes (``sent`` excludes ``resolved_applied``). On a stop the summary is attached
    to the raised error as ``push_summary``, with ``stopped_by`` naming its class."""

    sent: int
    resolved_applied: int
    rejected: int
    held: int
    failed: int
    users_done: int
    elapsed_s: float
    stopped_by: str | None = None


@dataclass(slots=True)
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    users_done: int = 0

    def summary(self, elapsed_s: float, stopped_by: str | None) -> PushSummary:
        c = self.counts.get
        return PushSummary(
            sent=c("sent", 0),
            resolved_applied=c("resolved_applied", 0),
            rejected=c("rejected", 0),
            held=c("held", 0),
            failed=c("failed", 0),
            users_done=self.users_done,
            elapsed_s=elapsed_s,
            stopped_by=stopped_by,
        )


async def push(
    users: Iterable[UserWork] | AsyncIterable[UserWork],
    client: FrigadeClient,
    *,
    concurrency: int,
    on_outcome: Callable[[Outcome], None],
    on_state: Callable[[str, UserFlowStates], None],
) -> PushSummary:
    """Send every user's requests. At most ``concurrency`` users are in flight, served by that many
    worker tasks pulling from ``users``, so memory does not grow with the number of users.

    A rejected or failed request holds the user's later requests for the same flow. ``on_state`` gets
    each finished user's last returned state. An ``AuthError`` or ``MauCapError`` stops everything at
    once and is re-raised; requests that had no outcome yet get none.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    started = time.monotonic()
    tally = _Tally()
    source = _Source(users)
    stopping = asyncio.Event()

    def record(outcome: Outcome) -> None:
        tally.counts[outcome.outcome] = tally.counts.get(outcome.outcome, 0) + 1
        on_outcome(outcome)

    async def worker() -> None:
        while not stopping.is_set():
            work = await source.next()
            if work is None or stopping.is_set():
                return
            last = await _push_user(work, client, record, stopping)
            # Even when a stop arrives, the state this user's writes returned is the truth the
            # snapshot and the sync state need.
            if last is not None:
                on_state(work.user_id, last)
            if stopping.is_set():
                return
            tally.users_done += 1

    workers = [asyncio.create_task(worker(), name=f"push-worker-{i}") for i in range(concurrency)]
    try:
        await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stopping.set()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await source.aclose()

    errors = [t.exception() for t in workers if not t.cancelled() and t.exception() is not None]
    # a stop wins over any error it caused in other workers
    error = next((e for e in errors if isinstance(e, StopRunError)), errors[0] if errors else None)
    if error is not None:
        summary = tally.summary(time.monotonic() - started, type(error).__name__)
        error.push_summary = summary  # type: ignore[attr-defined]
        error.add_note(
            f"push stopped by {type(error).__name__}: {summary.sent} sent, "
            f"{summary.resolved_applied} resolved as applied, {summary.rejected} rejected, "
            f"{summary.held} held, {summary.failed} failed, {summary.users_done} users done"
        )
        raise error
    return tally.summary(time.monotonic() - started, None)


async def _push_user(
    work: UserWork,
    client: FrigadeClient,
    record: Callable[[Outcome], None],
    stopping: asyncio.Event,
) -> UserFlowStates | None:
    """Send one user's requests in order; returns the state of the last successful one."""
    current: dict[str, FlowState] = dict(work.start)
    blocked: dict[str, str] = {}
    last: UserFlowStates | None = None
    for req in work.requests:
        if stopping.is_set():
            return last
        if req.flow_slug in blocked:
            record(_outcome(req, "held", message=f"held after {blocked[req.flow_slug]}"))
            continue
        before = current.get(req.flow_slug)
        if before is None and last is not None and (wire := last.flow(req.flow_slug)) is not None:
            before = flow_state_from_wire(wire)
        try:
            after = apply(before, req.action, req.step_id, req.created_at) if before is not None else None
        except RuleError as exc:
            # the server would answer 400: do not spend a request (or an MAU) on it
            record(_outcome(req, "rejected", error_class=type(exc).__name__, message=str(exc)))
            blocked[req.flow_slug] = f"{req.request_id} was rejected"
            continue
        try:
            write = FlowStateWrite(
                user_id=req.user_id,
                flow_slug=req.flow_slug,
                action_type=req.action,
                step_id=req.step_id,
                group_id=req.group_id,
                data=req.data,
                created_at=req.created_at,
            )
        except ValueError as exc:
            # a value validation should have quarantined: this user's outcome, never the run's exception
            record(_outcome(req, "rejected", error_class=UNSENDABLE, message=f"the request cannot be built: {exc}"))
            blocked[req.flow_slug] = f"{req.request_id} was unsendable"
            continue
        result = await client.write(write, before=before, after=after)
        kind = _kind(result)
        record(_outcome(req, kind, result))
        if result.state is not None:
            # A read-back after an ambiguous or conflicting write is the newest state known too.
            last = result.state
        if not result.ok:
            blocked[req.flow_slug] = f"{req.request_id} {kind}"
            continue
        returned = result.state.flow(req.flow_slug) if result.state is not None else None
        if returned is not None:
            current[req.flow_slug] = flow_state_from_wire(returned)
        elif after is not None:
            current[req.flow_slug] = after
    return last


def _kind(result: WriteResult) -> OutcomeKind:
    if result.ok:
        return "resolved_applied" if result.resolved_by_read else "sent"
    if result.error_class in (RequestRejectedError.__name__, UNSENDABLE):
        return "rejected"
    return "failed"


def _outcome(
    req: PlannedRequest,
    kind: OutcomeKind,
    result: WriteResult | None = None,
    *,
    error_class: str | None = None,
    message: str | None = None,
) -> Outcome:
    return Outcome(
        request_id=req.request_id,
        user_id=req.user_id,
        flow_slug=req.flow_slug,
        seq=req.seq,
        status=result.status if result is not None else None,
        attempts=result.attempts if result is not None else 0,
        ok=result.ok if result is not None else False,
        error_class=result.error_class if result is not None else error_class,
        message=result.message if result is not None else message,
        outcome=kind,
        at=time.time(),
    )


class _Source:
    """One iterator shared by all workers; pulls are serialized because an async generator cannot be
    advanced by two tasks at once."""

    def __init__(self, users: Iterable[UserWork] | AsyncIterable[UserWork]) -> None:
        self._lock = asyncio.Lock()
        self._sync: Iterator[UserWork] | None = None
        self._async: AsyncIterator[UserWork] | None = None
        if isinstance(users, AsyncIterable):
            self._async = aiter(users)
        else:
            self._sync = iter(users)
        self._done = False

    async def next(self) -> UserWork | None:
        async with self._lock:
            if self._done:
                return None
            try:
                if self._async is not None:
                    return await anext(self._async)
                assert self._sync is not None
                return next(self._sync)
            except (StopIteration, StopAsyncIteration):
                self._done = True
                return None

    async def aclose(self) -> None:
        # an abandoned async generator would otherwise be finalized later, outside our control
        aclose = getattr(self._async, "aclose", None)
        if aclose is not None and not self._done:
            await aclose()
