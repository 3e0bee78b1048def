"""An in-memory Frigade for ``httpx.MockTransport``: real state rules, scripted faults, a request log."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from frigade.errors import MAU_CAP_MESSAGE
from frigade.rules import Action, FlowState, RuleError, apply, initial_state

KEY = "api_private_0123456789abcdefSECRET"
BASE_URL = "https://api.frigade.test"


def error_response(status: int, message: str | list[str], **headers: str) -> httpx.Response:
    body = {"statusCode": status, "message": message, "error": "Error"}
    return httpx.Response(status, json=body, headers=headers)


def mau_response() -> httpx.Response:
    return error_response(429, MAU_CAP_MESSAGE)


@dataclass
class Fault:
    """Replaces the answer to one write. ``apply`` makes the write take effect first; a fault with
    neither a response nor an exception lets that write through untouched."""

    response: httpx.Response | None = None
    exc: Exception | None = None
    apply: bool = False

    @property
    def passes(self) -> bool:
        return self.response is None and self.exc is None


@dataclass
class Seen:
    kind: str  # "write" | "read" | "flows"
    user_id: str | None
    body: dict[str, Any]
    headers: httpx.Headers
    at: float


@dataclass
class FakeFrigade:
    flows: Mapping[str, Sequence[str]]
    key: str = KEY
    honour_created_at: bool = True
    page_size: int = 100
    ignore_offset: bool = False
    #: faults for the next writes of anybody / of one user, and for the next reads
    faults: deque[Fault] = field(default_factory=deque)
    user_faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    read_faults: deque[Fault] = field(default_factory=deque)
    #: once set, every request is answered with it (e.g. a revoked key, the MAU cap)
    answer_all: httpx.Response | None = None
    states: dict[tuple[str, str], FlowState] = field(default_factory=dict)
    log: list[Seen] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)
    clock: Callable[[], float] = lambda: 0.0
    _tick: int = 0

    # -- views ----------------------------------------------------------------------------------

    def writes(self, user_id: str | None = None) -> list[Seen]:
        return [s for s in self.log if s.kind == "write" and (user_id is None or s.user_id == user_id)]

    def reads(self, user_id: str | None = None) -> list[Seen]:
        return [s for s in self.log if s.kind == "read" and (user_id is None or s.user_id == user_id)]

    def state(self, user_id: str, flow: str) -> FlowState:
        return self.states.get((user_id, flow), initial_state(self.flows[flow]))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def delayed_transport(self, delay: Callable[[], float]) -> httpx.MockTransport:
        async def handler(request: httpx.Request) -> httpx.Response:
            # the log records arrival order, so log before the delay
            response = self.handle(request)
            await asyncio.sleep(delay())
            return response

        return httpx.MockTransport(handler)

    # -- the API --------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        path = request.url.path
        is_write = "flowSlug" in body or "actionType" in body
        kind = "flows" if path == "/v1/public/flows" else "write" if is_write else "read"
        self.log.append(Seen(kind, body.get("userId"), body, request.headers, self.clock()))
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return error_response(403, "Forbidden resource")
        if self.answer_all is not None:
            return self.answer_all
        if kind == "flows":
            return self._list_flows(request)
        if path != "/v1/public/flowStates" or request.method != "POST":
            return error_response(404, f"Cannot {request.method} {path}")
        if kind == "read":
            fault = self.read_faults.popleft() if self.read_faults else None
            if fault is None or fault.passes:
                return self._render(body["userId"])
            return self._fault(fault)
        user = str(body.get("userId"))
        queue = self.user_faults.get(user) or self.faults
        fault = queue.popleft() if queue else None
        if fault is None or fault.passes:
            return self._write(body)
        if fault.apply:
            answer = self._write(body)
            assert answer.status_code == 201, answer.text
        return self._fault(fault)

    def _fault(self, fault: Fault) -> httpx.Response:
        if fault.exc is not None:
            raise fault.exc
        assert fault.response is not None
        return fault.response

    def _server_time(self) -> str:
        self._tick += 1
        t = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(seconds=self._tick)
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _write(self, body: dict[str, Any]) -> httpx.Response:
        problems = [f"{f} should not be empty" for f in ("userId", "flowSlug", "actionType") if not body.get(f)]
        if problems:
            return error_response(400, problems, error="Bad Request")
        flow = body["flowSlug"]
        if flow not in self.flows:
            return error_response(400, [f"unknown flowSlug {flow!r}"])
        try:
            action = Action(body["actionType"])
        except ValueError:
            return error_response(400, [f"actionType must be one of {', '.join(Action)}"])
        at = _normalized(body.get("createdAt")) if self.honour_created_at else None
        user = body["userId"]
        try:
            new = apply(self.state(user, flow), action, body.get("stepId"), at or self._server_time())
        except RuleError as exc:
            return error_response(400, [str(exc)])
        self.states[(user, flow)] = new
        self.applied.append(body)
        return self._render(user, status=201)

    def _render(self, user_id: str, status: int = 200) -> httpx.Response:
        return httpx.Response(status, json=render_states(self.flows, lambda f: self.state(user_id, f)))

    def _list_flows(self, request: httpx.Request) -> httpx.Response:
        offset = 0 if self.ignore_offset else int(request.url.params.get("offset", 0))
        limit = int(request.url.params.get("limit", self.page_size))
        slugs = list(self.flows)
        page = [
            {
                "slug": s,
                "name": s.title(),
                "type": "CHECKLIST",
                "version": 1,
                "status": "ACTIVE",
                "data": json.dumps({"steps": [{"id": i} for i in self.flows[s]]}),
            }
            for s in slugs[offset : offset + limit]
        ]
        return httpx.Response(200, json={"data": page, "offset": offset, "limit": limit})


def render_states(flows: Mapping[str, Sequence[str]], state_of: Callable[[str], FlowState]) -> dict[str, Any]:
    """The response shape of the flowStates endpoints."""
    eligible = []
    for slug in flows:
        st = state_of(slug)
        steps = [
            {
                "id": sid,
                "title": sid,
                "$state": {
                    "completed": s.completed,
                    "skipped": s.skipped,
                    "started": s.started,
                    "visible": True,
                    "blocked": False,
                    "lastActionAt": s.last_action_at,
                },
            }
            for sid, s in zip(st.step_ids, st.steps, strict=True)
        ]
        eligible.append(
            {
                "flowSlug": slug,
                "flowName": slug.title(),
                "flowType": "CHECKLIST",
                "version": 1,
                "data": {"steps": steps},
                "$state": {
                    "currentStepId": st.current_step_id,
                    "currentStepIndex": st.current_step_index,
                    "completed": st.completed,
                    "started": st.started,
                    "skipped": st.skipped,
                    "visible": st.visible,
                    "lastActionAt": st.last_action_at,
                },
            }
        )
    return {"eligibleFlows": eligible, "ineligibleFlows": []}


def _normalized(at: str | None) -> str | None:
    """Times come back as a JavaScript Date prints them, whatever ISO form was sent."""
    if at is None:
        return None
    t = datetime.fromisoformat(at)
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
