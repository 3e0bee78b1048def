"""The push stage: send planned requests, each user's strictly in order, many users at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from frigade.client import UNSENDABLE, FrigadeClient, WriteResult
from frigade.errors import RequestRejectedError, RulesMismatchError, StopRunError
from frigade.models import FlowStateWrite, UserFlowStates, flow_state_from_wire
from frigade.rules import DEFAULT_RULES, Action, FlowState, RuleError, Rules, apply, differing_settings

__all__ = [
    "STOP_WITHIN_USERS",
    "FirstUsers",
    "Outcome",
    "OutcomeKind",
    "PlannedRequest",
    "PushSummary",
    "UserWork",
    "push",
    "write_of",
]

#: ``already_in_effect``: not sent, the state the server last returned already shows its effect;
#: ``held_unpredicted``: not sent, an earlier write of the user returned a state the rules profile did
#: not predict (resumable once the profile fits); ``held_replan``: not sent, the server showed progress
#: made outside this run (by the SDK, by the user) in the flow: the flow is planned again from it
OutcomeKind = Literal[
    "sent", "rejected", "held", "failed", "resolved_applied", "already_in_effect", "held_unpredicted", "held_replan"
]
#: an unpredicted state among the first this many users of a push stops it: the profile does not fit
STOP_WITHIN_USERS = 10


@dataclass(slots=True)
class FirstUsers:
    """Counts the users handed to senders, across every push of one attempt (a run pushes in
    batches): an unpredicted state among the first ``window`` of them stops the run."""

    window: int = STOP_WITHIN_USERS
    taken: int = 0

    def take(self) -> bool:
        """Count one more user; whether it is among the first ``window``."""
        self.taken += 1
        return self.taken <= self.window


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
    already_in_effect: int = 0
    held_unpredicted: int = 0
    held_replan: int = 0


#: how long writes in flight at a stop may take to come back and be recorded
STOP_GRACE_S = 5.0


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
            already_in_effect=c("already_in_effect", 0),
            held_unpredicted=c("held_unpredicted", 0),
            held_replan=c("held_replan", 0),
        )


async def push(
    users: Iterable[UserWork] | AsyncIterable[UserWork],
    client: FrigadeClient,
    *,
    concurrency: int,
    on_outcome: Callable[[Outcome], None],
    on_state: Callable[[str, UserFlowStates], None],
    rules: Rules = DEFAULT_RULES,
    first_users: FirstUsers | None = None,
    replan: bool = False,
) -> PushSummary:
    """Send every user's requests. At most ``concurrency`` users are in flight, served by that many
    worker tasks pulling from ``users``, so memory does not grow with the number of users.

    Each request is first held against the state the server last returned for the user and flow
    (``rules`` predicts its effect): one whose effect is already in place is not sent. A write whose
    returned state is not the one ``rules`` predicts holds the user's remaining requests, and among
    ``first_users`` (default: this push's first ``STOP_WITHIN_USERS``) stops the push with a
    ``RulesMismatchError`` naming the setting that differs. With ``replan``, a returned state that
    shows progress made outside this run (the write's own effect is in place, and no single setting
    of the rules explains the difference) is no mismatch: the flow's remaining requests are held
    (``held_replan``) for the caller to plan again from that state; so is a flow whose state, as the
    user's last write returned it, is not the one its requests were planned from. A rejected or failed request holds the
    user's later requests for the same flow. ``on_state`` gets each finished user's last returned
    state. An ``AuthError`` or ``MauCapError`` stops everything and is re-raised: nothing new is
    sent, writes in flight get ``STOP_GRACE_S`` to come back with their outcome, and requests that
    had no outcome by then get none.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    started = time.monotonic()
    tally = _Tally()
    source = _Source(users)
    stopping = asyncio.Event()
    first = first_users if first_users is not None else FirstUsers()

    def record(outcome: Outcome) -> None:
        tally.counts[outcome.outcome] = tally.counts.get(outcome.outcome, 0) + 1
        on_outcome(outcome)

    async def worker() -> None:
        while not stopping.is_set():
            work = await source.next()
            if work is None or stopping.is_set():
                return
            early = first.take()
            last, mismatch = await _push_user(work, client, record, stopping, rules, replan)
            # Even when a stop arrives, the state this user's writes returned is the truth the
            # snapshot and the sync state need.
            if last is not None:
                on_state(work.user_id, last)
            if mismatch is not None and early:
                raise RulesMismatchError(mismatch)
            if stopping.is_set():
                return
            tally.users_done += 1

    workers = [asyncio.create_task(worker(), name=f"push-worker-{i}") for i in range(concurrency)]
    try:
        await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        stopping.set()
        # Writes already on the wire when a stop came may well have landed: give them a moment to
        # come back, so their outcome is recorded (and counted) instead of being left to a read-back.
        # Workers between requests see ``stopping`` and end; the client refuses anything new.
        await asyncio.wait(workers, timeout=STOP_GRACE_S)
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
            f"{summary.resolved_applied} resolved as applied, {summary.already_in_effect} already in effect, "
            f"{summary.rejected} rejected, {summary.held} held, {summary.held_unpredicted} held as "
            f"unpredicted, {summary.failed} failed, {summary.users_done} users done"
        )
        raise error
    return tally.summary(time.monotonic() - started, None)


async def _push_user(
    work: UserWork,
    client: FrigadeClient,
    record: Callable[[Outcome], None],
    stopping: asyncio.Event,
    rules: Rules,
    replan: bool = False,
) -> tuple[UserFlowStates | None, str | None]:
    """Send one user's requests in order. Returns the state of the last successful one, and why the
    user's remaining requests were held when a write returned a state ``rules`` did not predict."""
    current: dict[str, FlowState] = dict(work.start)
    blocked: dict[str, str] = {}
    last: UserFlowStates | None = None
    mismatch: str | None = None
    #: flows written in this push, and flows held to be planned again from the server's state
    written: set[str] = set()
    replanning: set[str] = set()
    for i, req in enumerate(work.requests):
        if stopping.is_set():
            return last, mismatch
        if mismatch is not None:
            record(_outcome(req, "held_unpredicted", message=mismatch))
            continue
        if req.flow_slug in blocked:
            record(_outcome(req, "held", message=f"held after {blocked[req.flow_slug]}"))
            continue
        before = current.get(req.flow_slug)
        if before is None and last is not None and (wire := last.flow(req.flow_slug)) is not None:
            before = flow_state_from_wire(wire)
        if replan and req.flow_slug not in written and before is not None and last is not None:
            # the user's last write returned every flow: one not as planned from is planned again
            wire = last.flow(req.flow_slug)
            if wire is not None and flow_state_from_wire(wire).logical() != before.logical():
                replanning.add(req.flow_slug)
        if req.flow_slug in replanning:
            record(_outcome(req, "held_replan", message=_REPLAN))
            continue
        try:
            after = apply(before, req.action, req.step_id, req.created_at, rules) if before is not None else None
        except RuleError as exc:
            # the server would answer 400: do not spend a request (or an MAU) on it
            record(_outcome(req, "rejected", error_class=type(exc).__name__, message=str(exc)))
            blocked[req.flow_slug] = f"{req.request_id} was rejected"
            continue
        if before is not None and after is not None and after.logical() == before.logical():
            # Re-sending what is in effect appends history and fires webhooks, and changes nothing.
            record(_outcome(req, "already_in_effect", ok=True, message="the server already shows its effect"))
            continue
        try:
            write = write_of(req)
        except ValueError as exc:
            # a value validation should have quarantined: this user's outcome, never the run's exception
            record(_outcome(req, "rejected", error_class=UNSENDABLE, message=f"the request cannot be built: {exc}"))
            blocked[req.flow_slug] = f"{req.request_id} was unsendable"
            continue
        # the user's requests left, this one included: the longest sequences are served first
        result = await client.write(write, before=before, after=after, priority=len(work.requests) - i)
        kind = _kind(result)
        record(_outcome(req, kind, result))
        if result.state is not None:
            # A read-back after an ambiguous or conflicting write is the newest state known too.
            last = result.state
        if not result.ok:
            blocked[req.flow_slug] = f"{req.request_id} {kind}"
            continue
        written.add(req.flow_slug)
        returned = result.state.flow(req.flow_slug) if result.state is not None else None
        if returned is not None:
            got = flow_state_from_wire(returned)
            if before is not None and after is not None and got.logical() != after.logical():
                if replan and _prior_progress(before, req, got, rules):
                    replanning.add(req.flow_slug)
                else:
                    mismatch = _mismatch_message(req, before, got, rules)
            current[req.flow_slug] = got
        elif after is not None:
            current[req.flow_slug] = after
    return last, mismatch


_REPLAN = "the server showed progress made outside this run in this flow: planned again from it"


def _prior_progress(before: FlowState, req: PlannedRequest, got: FlowState, rules: Rules) -> bool:
    """Whether an unpredicted state is progress the flow already had (the SDK's, a user's) rather than
    rules the server plays differently: the write's own effect is in place under ``rules`` (applying it
    again to what came back changes nothing) and no single setting of the rules explains ``got``."""
    try:
        in_place = apply(got, req.action, req.step_id, None, rules).logical() == got.logical()
    except RuleError:
        return False
    return in_place and not differing_settings(before, req.action, req.step_id, got, rules)


def _mismatch_message(req: PlannedRequest, before: FlowState, got: FlowState, rules: Rules) -> str:
    differs = differing_settings(before, req.action, req.step_id, got, rules)
    what = (
        f"setting {' or '.join(differs)} differs"
        if differs
        else "no single setting explains it (several differ, or a rule no profile has)"
    )
    step = f" {req.step_id}" if req.step_id else ""
    return (
        f"the server's state after {req.action.value}{step} in flow {req.flow_slug} is not what rules "
        f"profile {rules.name!r} predicts: {what}; run `frigade-migrate probe --flow {req.flow_slug} --yes` "
        "and resume with --rules rules.json (if the probe finds the rules match, the user's state changed "
        "while this run wrote: `frigade-migrate sync EXPORT --from-current` plans from the state Frigade holds)"
    )


def write_of(req: PlannedRequest) -> FlowStateWrite:
    """The wire body of a planned request (raises ValueError for a value that cannot be sent)."""
    return FlowStateWrite(
        user_id=req.user_id,
        flow_slug=req.flow_slug,
        action_type=req.action,
        step_id=req.step_id,
        group_id=req.group_id,
        data=req.data,
        created_at=req.created_at,
    )


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
    ok: bool = False,
) -> Outcome:
    return Outcome(
        request_id=req.request_id,
        user_id=req.user_id,
        flow_slug=req.flow_slug,
        seq=req.seq,
        status=result.status if result is not None else None,
        attempts=result.attempts if result is not None else 0,
        ok=result.ok if result is not None else ok,
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
