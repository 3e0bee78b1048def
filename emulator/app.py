"""The emulator's ASGI app: Frigade's flow-state API over the shared rules and a SQLite store.

Every write goes through ``frigade.rules.apply``; the app only validates, stores and renders.
Choices where Frigade's API documentation leaves room:
- ``createdAt`` is validated as ISO-8601 and then stored and returned exactly as given, so a client can
  compare ``lastActionAt`` with what it sent; without it the server's time is used
  (``YYYY-MM-DDTHH:MM:SS.mmmZ``, like Frigade's own timestamps).
- State is kept per user; ``groupId`` is validated and recorded in history only.
- Reads (the POST read form and GET) count the user as active for the month, like writes.
- ``flowResponses`` (private key) are the flow's accepted writes since its last DELETE reset.
- Request order in a /v1 request: throttle (every /v1 request counts, at arrival), latency, key,
  validation, the MAU cap, injected faults (writes only), the write.
- Stats count since the process started or the last reset, except ``distinct_users``,
  ``monthly_active_users`` and ``history_rows``, which describe the stored data.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import json
import logging
import math
import os
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from emulator.openapi import openapi_document
from emulator.store import Store, StoredFlow
from frigade.catalog import Catalog, CatalogFlow, externalize
from frigade.errors import MAU_CAP_MESSAGE
from frigade.rules import DEFAULT_RULES, Action, FlowState, RuleError, Rules, apply, initial_state

__all__ = [
    "DEFAULT_PRIVATE_KEY",
    "DEFAULT_PUBLIC_KEY",
    "FAULT_KINDS",
    "THROTTLE_MESSAGE",
    "EmulatorConfig",
    "create_app",
]

DEFAULT_PUBLIC_KEY = "api_public_emulator"
DEFAULT_PRIVATE_KEY = "api_private_emulator"
#: a 500 before the write is applied (nothing stored), a 500 after it is stored, or the connection
#: closed without an answer after it is stored
FAULT_KINDS: tuple[str, ...] = ("error-before", "error-after", "drop-after")
THROTTLE_MESSAGE = "ThrottlerException: Too Many Requests"

_log = logging.getLogger("emulator")
_ACTIONS = {a.value: a for a in Action}
_ACTION_LIST = ", ".join(a.value for a in Action)
_WRITE_FIELDS = ("flowSlug", "actionType", "stepId", "data", "createdAt")
_DROP = "emulator.drop_connection"
_FLOWS_PAGE = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    catalog: Catalog
    db_path: str | Path = "emulator.db"
    public_key: str = field(default=DEFAULT_PUBLIC_KEY, repr=False)
    private_key: str = field(default=DEFAULT_PRIVATE_KEY, repr=False)
    #: most /v1 requests admitted in any sliding one-second window (None: unlimited)
    rate_limit: int | None = None
    #: most distinct users per calendar month (None: unlimited)
    mau_cap: int | None = None
    #: probability that a valid write gets a fault, chosen uniformly among ``fault_kinds``
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_seed: int = 0
    #: added to every /v1 request: latency_ms plus uniform(0, latency_jitter_ms)
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    #: which reading of the flow-state rules this server plays
    rules: Rules = DEFAULT_RULES
    #: targeting: flow slug -> fnmatch patterns of the user ids in its audience; a user outside a
    #: flow's audience sees it with visible=false (flows not named here target everyone)
    audiences: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: the server's clock (UTC); injectable so the MAU month can be tested
    clock: Callable[[], datetime] = field(default=_utcnow, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if not self.public_key or not self.private_key:
            problems.append("keys must not be empty")
        if self.public_key == self.private_key:
            problems.append("the public and private keys must differ")
        if self.rate_limit is not None and self.rate_limit < 1:
            problems.append("rate_limit must be at least 1")
        if self.mau_cap is not None and self.mau_cap < 0:
            problems.append("mau_cap must not be negative")
        if not 0.0 <= self.fault_rate <= 1.0:
            problems.append("fault_rate must be between 0 and 1")
        unknown = sorted(set(self.fault_kinds) - set(FAULT_KINDS))
        if unknown or not self.fault_kinds:
            problems.append(f"fault_kinds must be a non-empty subset of {', '.join(FAULT_KINDS)}")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            problems.append("latency must not be negative")
        if problems:
            raise ValueError("; ".join(problems))


# -- responses ---------------------------------------------------------------------------------


def _error(
    status: int, message: str | list[str], error: str | None, headers: Mapping[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if error is not None:
        body["error"] = error
    return JSONResponse(body, status_code=status, headers=headers)


def _bad_request(messages: list[str]) -> Response:
    return _error(400, messages[0] if len(messages) == 1 else messages, "Bad Request")


def _forbidden() -> Response:
    return _error(403, "Forbidden resource", "Forbidden")


def _not_found(message: str) -> Response:
    return _error(404, message, "Not Found")


def _server_error() -> Response:
    return _error(500, "Internal server error", None)


class _DropConnection(Response):
    """Asks the outer app to close the connection without writing anything (an injected fault)."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_DROP] = True


class _EmulatorApp(Starlette):
    # Uvicorn closes the transport without sending a byte when an ASGI app returns a value instead of
    # None; that is the only way to drop a connection it offers without reaching into its internals.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> str | None:  # type: ignore[override]
        await super().__call__(scope, receive, send)
        return "drop connection" if scope.get(_DROP) else None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON and could not be stored and sent back.
    raise ValueError(f"{name} is not JSON")


def _is_iso8601(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


# -- validation --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Write:
    user_id: str
    flow: CatalogFlow
    action: Action
    step_id: str | None
    group_id: str | None
    data: str | None
    created_at: str | None


def _user_id(value: object, errors: list[str]) -> str | None:
    if value is None or value == "":
        errors.append("userId should not be empty")
    elif not isinstance(value, str):
        errors.append("userId must be a string")
    else:
        return value
    return None


def _group_id(value: object, errors: list[str]) -> str | None:
    if value is not None and not isinstance(value, str):
        errors.append("groupId must be a string")
        return None
    return value


def _is_read(body: Mapping[str, Any]) -> bool:
    return all(body.get(k) is None for k in _WRITE_FIELDS)


# -- stats -------------------------------------------------------------------------------------


@dataclass
class _Stats:
    by_status: Counter[int] = field(default_factory=Counter)
    writes_accepted: int = 0
    writes_unchanged: int = 0
    reads: int = 0
    throttled: int = 0
    mau_capped: int = 0
    max_window: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)


class _Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._store: Store | None = None
        self.flows = {f.slug: f for f in config.catalog.flows}
        self.active = config.catalog.active
        self.step_ids = {f.slug: f.step_ids for f in self.active}
        self.rules = config.rules
        self.initial = {f.slug: initial_state(f.step_ids, config.rules) for f in self.active}
        self.step_configs = {f.slug: [dict(s) for s in f.config()["steps"]] for f in self.active}
        self.rate_limit = config.rate_limit
        self.mau_cap = config.mau_cap
        self._keys = (config.public_key.encode(), config.private_key.encode())
        self._clear_runtime()

    def _clear_runtime(self) -> None:
        self.stats = _Stats()
        self.fault_rng = random.Random(self.config.fault_seed)
        # A separate stream, so that turning latency on does not change which writes get faults.
        self.latency_rng = random.Random(self.config.fault_seed ^ 0x5EED)
        self.arrivals: deque[float] = deque()
        self.admitted: deque[float] = deque()

    @property
    def store(self) -> Store:
        # Opened on first use rather than only in the lifespan, so ASGI test transports that skip the
        # lifespan still work.
        if self._store is None:
            self._store = Store(self.config.db_path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- the /v1 envelope ----------------------------------------------------------------------

    def _arrive(self) -> Response | None:
        """Account for one /v1 request at its arrival; a 429 when the throttle says no."""
        now = time.monotonic()
        horizon = now - 1.0
        arrivals = self.arrivals
        arrivals.append(now)
        while arrivals[0] <= horizon:
            arrivals.popleft()
        if len(arrivals) > self.stats.max_window:
            self.stats.max_window = len(arrivals)
        if self.rate_limit is None:
            return None
        admitted = self.admitted
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if len(admitted) >= self.rate_limit:
            self.stats.throttled += 1
            wait = max(1, math.ceil(admitted[0] + 1.0 - now))
            return _error(429, THROTTLE_MESSAGE, "Too Many Requests", {"Retry-After": str(wait)})
        admitted.append(now)
        return None

    def _key_kind(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        raw = key.strip().encode()
        if hmac.compare_digest(raw, self._keys[1]):
            return "private"
        if hmac.compare_digest(raw, self._keys[0]):
            return "public"
        return None

    def api(
        self, handler: Callable[[Request, bool], Awaitable[Response]], *, private_only: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            response = self._arrive()
            config = self.config
            if config.latency_ms or config.latency_jitter_ms:
                delay = config.latency_ms + self.latency_rng.uniform(0.0, config.latency_jitter_ms)
                await asyncio.sleep(delay / 1000.0)
            if response is None:
                kind = self._key_kind(request)
                if kind is None or (private_only and kind != "private"):
                    response = _forbidden()
                else:
                    try:
                        response = await handler(request, kind == "private")
                    except Exception:
                        _log.exception("request %s %s failed", request.method, request.url.path)
                        response = _server_error()
            if not isinstance(response, _DropConnection):
                self.stats.by_status[response.status_code] += 1
            return response

        return endpoint

    def admin(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if self._key_kind(request) != "private":
                return _forbidden()
            return await handler(request)

        return endpoint

    # -- users and state -----------------------------------------------------------------------

    def _now(self) -> tuple[str, str]:
        moment = self.config.clock()
        return _iso(moment), f"{moment.year:04d}-{moment.month:02d}"

    def _admit_user(self, user_id: str, month: str) -> bool:
        cap = self.mau_cap
        if cap is None or self.store.is_active(user_id, month):
            return True
        if self.store.active_count(month) < cap:
            return True
        self.stats.mau_capped += 1
        return False

    def _responses(self, user_id: str, stored: Mapping[str, StoredFlow]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {slug: [] for slug in self.step_ids}
        for entry in self.store.history(user_id):
            bucket = out.get(entry.flow_slug)
            known = stored.get(entry.flow_slug)
            if bucket is None or (known is not None and entry.id <= known.responses_after):
                continue
            bucket.append(
                {
                    "flowSlug": entry.flow_slug,
                    "stepId": entry.step_id,
                    "actionType": entry.action,
                    "data": entry.data if entry.data is not None else "{}",
                    "createdAt": entry.created_at,
                }
            )
        return out

    def _targeted(self, flow_slug: str, user_id: str) -> bool:
        patterns = self.config.audiences.get(flow_slug)
        return patterns is None or any(fnmatch.fnmatchcase(user_id, p) for p in patterns)

    def _stateful(
        self, flow: CatalogFlow, state: FlowState, responses: list[dict[str, Any]] | None, targeted: bool = True
    ) -> dict[str, Any]:
        steps = []
        for config, step in zip(self.step_configs[flow.slug], state.steps, strict=True):
            step_state: dict[str, Any] = {
                "completed": step.completed,
                "skipped": step.skipped,
                "started": step.started,
                "visible": True,
                "blocked": False,
                "lastActionAt": step.last_action_at,
            }
            if responses is not None:
                step_id = config["id"]
                step_state["flowResponses"] = [r for r in responses if r["stepId"] == step_id]
            steps.append({**config, "$state": step_state})
        flow_state: dict[str, Any] = {
            "currentStepId": state.current_step_id,
            "currentStepIndex": state.current_step_index,
            "completed": state.completed,
            "started": state.started,
            "skipped": state.skipped,
            # Visibility is targeting: outside the audience a flow is present but not visible.
            "visible": state.visible and targeted,
            "lastActionAt": state.last_action_at,
        }
        if responses is not None:
            flow_state["flowResponses"] = responses
        return {
            "flowSlug": flow.slug,
            "flowName": flow.name or flow.slug,
            "flowType": flow.type or "CHECKLIST",
            "version": flow.version,
            "data": {"steps": steps},
            "$state": flow_state,
        }

    def _user_states(
        self, user_id: str, private: bool, stored: Mapping[str, StoredFlow] | None = None
    ) -> dict[str, Any]:
        if stored is None:
            stored = self.store.load(user_id, self.step_ids)
        responses = self._responses(user_id, stored) if private else None
        eligible = []
        for flow in self.active:
            known = stored.get(flow.slug)
            state = known.state if known is not None else self.initial[flow.slug]
            eligible.append(
                self._stateful(
                    flow,
                    state,
                    responses[flow.slug] if responses is not None else None,
                    self._targeted(flow.slug, user_id),
                )
            )
        return {"eligibleFlows": eligible, "ineligibleFlows": []}

    # -- validation ----------------------------------------------------------------------------

    def _validate_write(self, body: Mapping[str, Any]) -> _Write | list[str]:
        errors: list[str] = []
        user_id = _user_id(body.get("userId"), errors)

        flow: CatalogFlow | None = None
        slug = body.get("flowSlug")
        if slug is None or slug == "":
            errors.append("flowSlug should not be empty")
        elif not isinstance(slug, str):
            errors.append("flowSlug must be a string")
        else:
            flow = self.flows.get(slug)
            if flow is None:
                errors.append(f"unknown flowSlug '{slug}'")
            elif flow.status != "ACTIVE":
                errors.append(f"flowSlug '{slug}' is {flow.status}, not ACTIVE")
                flow = None

        action: Action | None = None
        raw_action = body.get("actionType")
        if raw_action is None or raw_action == "":
            errors.append("actionType should not be empty")
        elif not isinstance(raw_action, str) or raw_action not in _ACTIONS:
            errors.append(f"actionType must be one of the following values: {_ACTION_LIST}")
        else:
            action = _ACTIONS[raw_action]

        step_id = body.get("stepId")
        if step_id is not None and not isinstance(step_id, str):
            errors.append("stepId must be a string")
        elif action is not None and action.is_step:
            if not step_id:
                errors.append(f"stepId should not be empty for {action.value}")
            elif flow is not None and step_id not in flow.step_ids:
                errors.append(f"unknown stepId '{step_id}' in flow '{flow.slug}'")
        elif action is not None and step_id is not None:
            errors.append(f"stepId must not be given for {action.value}")

        group_id = _group_id(body.get("groupId"), errors)

        data = body.get("data")
        if data is not None and not isinstance(data, dict):
            errors.append("data must be an object")

        created_at = body.get("createdAt")
        if created_at is not None and (not isinstance(created_at, str) or not _is_iso8601(created_at)):
            errors.append("createdAt must be a valid ISO 8601 date string")

        if errors or user_id is None or flow is None or action is None:
            return errors
        return _Write(
            user_id=user_id,
            flow=flow,
            action=action,
            step_id=step_id,
            group_id=group_id,
            data=json.dumps(data, separators=(",", ":")) if data is not None else None,
            created_at=created_at,
        )

    # -- /v1 handlers --------------------------------------------------------------------------

    async def post_flow_states(self, request: Request, private: bool) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw, parse_constant=_reject_constant) if raw else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _bad_request(["body must be a JSON object"])
        if _is_read(body):
            return self._read(body.get("userId"), body.get("groupId"), private, 201)
        checked = self._validate_write(body)
        if isinstance(checked, list):
            return _bad_request(checked)
        return self._write(checked, private)

    async def get_flow_states(self, request: Request, private: bool) -> Response:
        query = request.query_params
        return self._read(query.get("userId"), query.get("groupId"), private, 200)

    def _read(self, raw_user: object, raw_group: object, private: bool, status: int) -> Response:
        errors: list[str] = []
        user_id = _user_id(raw_user, errors)
        _group_id(raw_group, errors)
        if errors or user_id is None:
            return _bad_request(errors)
        now, month = self._now()
        if not self._admit_user(user_id, month):
            return _error(429, MAU_CAP_MESSAGE, "Too Many Requests")
        self.store.touch(user_id, month, now)
        self.stats.reads += 1
        return JSONResponse(self._user_states(user_id, private), status_code=status)

    def _write(self, write: _Write, private: bool) -> Response:
        # Everything from here to the commit is synchronous on purpose: with no await in between, no
        # other request can interleave, so each user's read-modify-write is atomic.
        now, month = self._now()
        if not self._admit_user(write.user_id, month):
            return _error(429, MAU_CAP_MESSAGE, "Too Many Requests")
        fault = self._roll_fault()
        if fault == "error-before":
            return _server_error()
        store = self.store
        stored = store.load(write.user_id, self.step_ids)
        slug = write.flow.slug
        known = stored.get(slug)
        before = known.state if known is not None else self.initial[slug]
        at = (write.created_at if self.rules.honours_created_at else None) or now
        try:
            after = apply(before, write.action, write.step_id, at, self.rules)
        except RuleError as exc:  # validation should have caught it; keep the 400 shape anyway
            return _bad_request([str(exc)])
        changed = before.logical() != after.logical()
        store.record_write(
            user_id=write.user_id,
            flow_slug=slug,
            state=after,
            action=write.action.value,
            step_id=write.step_id,
            group_id=write.group_id,
            data=write.data,
            created_at=at,
            received_at=now,
            changed=changed,
            month=month,
        )
        self.stats.writes_accepted += 1
        if not changed:
            self.stats.writes_unchanged += 1
        if fault == "error-after":
            return _server_error()
        if fault == "drop-after":
            return _DropConnection()
        merged = dict(stored)
        merged[slug] = StoredFlow(after, known.responses_after if known is not None else 0)
        return JSONResponse(self._user_states(write.user_id, private, merged), status_code=201)

    def _roll_fault(self) -> str | None:
        config = self.config
        if config.fault_rate <= 0.0 or self.fault_rng.random() >= config.fault_rate:
            return None
        kind = self.fault_rng.choice(config.fault_kinds)
        self.stats.faults[kind] += 1
        _log.info("injecting fault %s", kind)
        return kind

    async def list_flows(self, request: Request, private: bool) -> Response:
        flows = self.config.catalog.flows
        try:
            offset = max(0, int(request.query_params.get("offset", 0)))
            limit = int(request.query_params.get("limit", _FLOWS_PAGE))
        except ValueError:
            return _bad_request(["offset and limit must be integers"])
        if limit < 1:
            return _bad_request(["limit must be at least 1"])
        page = [externalize(f) for f in flows[offset : offset + limit]]
        return JSONResponse({"data": page, "offset": offset, "limit": limit})

    async def get_flow(self, request: Request, private: bool) -> Response:
        slug = request.path_params["slug"]
        flow = self.flows.get(slug)
        if flow is None:
            return _not_found(f"flow '{slug}' not found")
        return JSONResponse(externalize(flow))

    async def get_user(self, request: Request, private: bool) -> Response:
        errors: list[str] = []
        user_id = _user_id(request.query_params.get("userId"), errors)
        if user_id is None:
            return _bad_request(errors)
        user = self.store.user(user_id)
        if user is None:
            return _not_found(f"user '{user_id}' not found")
        return JSONResponse(
            {
                "userId": user.user_id,
                "slug": user.slug,
                "firstSeenMonth": user.first_seen_month,
                "createdAt": user.created_at,
            }
        )

    async def delete_user_flow_state(self, request: Request, private: bool) -> Response:
        slug = request.path_params["flowSlug"]
        user_slug = request.path_params["userSlug"]
        flow = self.flows.get(slug)
        user_id = self.store.user_id_for_slug(user_slug)
        if flow is None or flow.status != "ACTIVE" or user_id is None:
            return JSONResponse({"flowSlug": slug, "userSlug": user_slug, "reset": False})
        self.store.reset_flow(user_id, slug, flow.step_ids, self._now()[0], self.rules)
        return JSONResponse({"flowSlug": slug, "userSlug": user_slug, "reset": True})

    # -- /_emulator and the rest ---------------------------------------------------------------

    async def stats_endpoint(self, request: Request) -> Response:
        stats = self.stats
        _, month = self._now()
        return JSONResponse(
            {
                "requests_total": sum(stats.by_status.values()),
                "requests_by_status": {str(k): v for k, v in sorted(stats.by_status.items())},
                "writes_accepted": stats.writes_accepted,
                "writes_unchanged": stats.writes_unchanged,
                "reads": stats.reads,
                "throttled": stats.throttled,
                "max_requests_per_second_window": stats.max_window,
                "distinct_users": self.store.distinct_users(),
                "monthly_active_users": self.store.active_count(month),
                "mau_capped": stats.mau_capped,
                "faults_injected": {k: stats.faults[k] for k in FAULT_KINDS},
                "history_rows": self.store.history_rows(),
                "uptime_s": round(time.monotonic() - stats.started, 3),
            }
        )

    async def reset_endpoint(self, request: Request) -> Response:
        self.store.clear()
        self._clear_runtime()
        return JSONResponse({"reset": True})

    async def history_endpoint(self, request: Request) -> Response:
        errors: list[str] = []
        user_id = _user_id(request.query_params.get("userId"), errors)
        if user_id is None:
            return _bad_request(errors)
        return JSONResponse({"userId": user_id, "data": [e.wire() for e in self.store.history(user_id)]})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pid": os.getpid()})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        phrase = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code)
        message = f"Cannot {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        return _error(exc.status_code, message, phrase, exc.headers)
    return _server_error()


async def _unhandled(request: Request, exc: Exception) -> Response:
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _server_error()


def create_app(config: EmulatorConfig) -> Starlette:
    """The emulator as an ASGI app. Serve it with a single worker: state is per process."""
    emu = _Emulator(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        _ = emu.store  # open (and create) the database before the first request
        try:
            yield
        finally:
            emu.close()

    routes = [
        Route("/v1/public/flowStates", emu.api(emu.post_flow_states), methods=["POST"]),
        Route("/v1/public/flowStates", emu.api(emu.get_flow_states), methods=["GET"]),
        Route("/v1/public/flows", emu.api(emu.list_flows), methods=["GET"]),
        Route("/v1/public/flows/{slug}", emu.api(emu.get_flow), methods=["GET"]),
        Route("/v1/users", emu.api(emu.get_user, private_only=True), methods=["GET"]),
        Route(
            "/v1/userFlowStates/{flowSlug}/{userSlug}",
            emu.api(emu.delete_user_flow_state, private_only=True),
            methods=["DELETE"],
        ),
        Route("/_emulator/stats", emu.admin(emu.stats_endpoint), methods=["GET"]),
        Route("/_emulator/reset", emu.admin(emu.reset_endpoint), methods=["POST"]),
        Route("/_emulator/history", emu.admin(emu.history_endpoint), methods=["GET"]),
        Route("/healthz", emu.healthz, methods=["GET"]),
        Route("/openapi.json", emu.openapi, methods=["GET"]),
    ]
    return _EmulatorApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unhandled},
    )
