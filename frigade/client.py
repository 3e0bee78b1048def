"""The async Frigade client: the one layer that retries, and the one that resolves ambiguous writes."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json as jsonlib
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlencode

import httpx
from pydantic import ValidationError

from frigade.errors import (
    MAU_CAP_MESSAGE,
    AmbiguousError,
    AuthError,
    ClientSetupError,
    ConnectFailedError,
    FrigadeError,
    InterruptedRunError,
    MauCapError,
    RequestRejectedError,
    StopRunError,
    ThrottledError,
    UnexpectedResponseError,
    UnreachableError,
)
from frigade.limiter import AdaptiveConcurrency, SettlingLimiter, SlidingWindowLimiter
from frigade.models import (
    ErrorBody,
    ExternalizedFlow,
    FlowList,
    FlowStateWrite,
    UserFlowStates,
    flow_state_from_wire,
    same_instant,
)
from frigade.rules import FlowState
from frigade.secret import ApiKey
from frigade.transport import AiohttpTransport, Answer, client_timeout

#: the stable core of Frigade's MAU-cap message
_MAU_MARKER = "maximum allowed maus"
assert _MAU_MARKER in MAU_CAP_MESSAGE.lower()
_MAU_MARKER_BYTES = _MAU_MARKER.encode()

__all__ = ["CONFLICT", "UNSENDABLE", "FrigadeClient", "WriteResult"]

#: ``WriteResult.error_class`` of an ambiguous write whose read-back matches neither expected state
CONFLICT = "Conflict"
#: ``WriteResult.error_class`` of a write whose body cannot be encoded: nothing was sent
UNSENDABLE = "unsendable"

_FLOW_STATES = "/v1/public/flowStates"
_FLOWS = "/v1/public/flows"
_BODY_EXCERPT = 500
_Verdict = Literal["applied", "not_applied", "conflict", "unresolved"]
#: an answer read whole: an ``Answer`` off the client's own aiohttp wire, else httpx's response
_Reply = Answer | httpx.Response
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of one write. Failures are data; only run-stopping errors are raised."""

    ok: bool
    status: int | None
    attempts: int
    error_class: str | None
    message: str | None
    state: UserFlowStates | None
    resolved_by_read: bool
    elapsed_s: float


class FrigadeClient:
    """Talks to the Frigade API through several small connection pools behind one shared limiter.

    Every request, reads included, takes a limiter grant. How many are in flight follows the API
    (``frigade.limiter.AdaptiveConcurrency``: about the rate times the latency, less when the
    latency climbs) up to ``concurrency``, or is ``concurrency`` itself with ``adaptive=False``;
    each goes to the least busy pool, so no pool is asked for more connections than it has.
    ``rate`` is ignored when a ``limiter`` is given. A throttling answer (a 429 that is not the MAU
    cap, a 503 with Retry-After) cuts the limiter's rate, which then climbs back (its ``throttled``).

    Every request also passes one connectivity gate. With ``outage_window_s > 0``, a request that
    cannot connect at all shuts the gate: every sender waits at it (no attempt is spent) while a probe
    (a cheap read) tries again, and the first HTTP answer of any kind opens it. Shut for longer than
    ``outage_window_s``, the run stops with ``UnreachableError`` ("cannot reach URL: reason").
    With 0 (the default) a failed connection is an ordinary failed attempt. ``notice`` hears of
    outages and recoveries in one line each.

    ``interrupt()`` stops the client: no new request is sent, waits (for the limiter, the gate, a
    back-off) end at once with ``InterruptedRunError``, and requests in flight get ``grace_s`` to
    come back before they are cancelled too.
    """

    def __init__(
        self,
        base_url: str,
        api_key: ApiKey | None,
        *,
        rate: float,
        concurrency: int = 64,
        adaptive: bool = True,
        pools: int | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_base: float = 0.25,
        backoff_cap: float = 30.0,
        settle_s: float = 1.0,
        send_created_at: bool = True,
        transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
        http: Literal["aiohttp", "httpx"] = "aiohttp",
        limiter: SlidingWindowLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: random.Random | None = None,
        outage_window_s: float = 0.0,
        probe_every_s: tuple[float, float] = (0.25, 2.0),
        notice: Callable[[str], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if pools is not None and pools < 1:
            raise ValueError("pools must be >= 1")
        if not (math.isfinite(outage_window_s) and outage_window_s >= 0):
            raise ValueError("outage_window_s must be >= 0")
        # httpcore's pools serialise on a lock: several small ones beat one big one; aiohttp's do not
        one_wire = transport_factory is None and http == "aiohttp"
        n_pools = pools if pools is not None else 1 if one_wire else max(1, math.ceil(concurrency / 4))
        per_pool = math.ceil(concurrency / n_pools)
        self._key = api_key
        # Counting requests until they have surely reached the server keeps the server's own count,
        # by arrival, under the rate too; a plain sliding log (tests inject one) counts grants only.
        self._limiter = limiter if limiter is not None else SettlingLimiter(rate)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._settle_s = settle_s
        self._send_created_at = send_created_at
        self._sleep = sleep
        self._rand = rand if rand is not None else random.Random()
        limiter_now = self._limiter
        self._slots = AdaptiveConcurrency(
            concurrency,
            lambda: limiter_now.rate,
            clock=self._limiter.now,
            **({} if adaptive else {"initial": concurrency, "floor": concurrency}),
        )

        headers = {"Accept": "application/json", "User-Agent": "frigade-migrate"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.reveal()}"
        limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
        # one SSL context for all pools: building one loads the CA bundle, which is slow
        ssl_context = httpx.create_ssl_context() if transport_factory is None else None
        if transport_factory is None and http == "aiohttp":
            # httpx's API over aiohttp's wire: a fraction of httpcore's CPU per request, with every
            # failure mapped to the httpx error of the same sent / not sent meaning (frigade.transport)
            def transport_factory() -> httpx.AsyncBaseTransport:
                return AiohttpTransport(per_pool, ssl_context=ssl_context)

            # the aiohttp session itself honours the proxy variables
            trust_env = False
        else:
            # proxy variables would route requests around an injected transport
            trust_env = transport_factory is None
        transports = [transport_factory() if transport_factory is not None else None for _ in range(n_pools)]
        #: each pool's aiohttp wire where this client built it: its requests skip httpx's Request and
        #: Response objects too (a tenth of a push's CPU), built from headers and a timeout made once
        self._wires = [t if one_wire and isinstance(t, AiohttpTransport) else None for t in transports]
        self._pools = [
            httpx.AsyncClient(
                base_url=base_url,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                limits=limits,
                verify=ssl_context if ssl_context is not None else True,
                transport=transport,
                trust_env=trust_env,
            )
            for transport in transports
        ]
        #: each pool's transport where this client chose it (the aiohttp wire, or one injected):
        #: requests are handed to it directly, without the AsyncClient layer's per-request work on
        #: redirects, cookies, auth flows and event hooks, which this API never uses and which cost
        #: about a third of a push's CPU. httpx's own default wire (``http="httpx"``) keeps the
        #: layer, which also routes through the proxies the environment names.
        self._transports = transports
        self._base = str(self._pools[0].base_url).rstrip("/")
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        self._wire_timeout = client_timeout(self._extensions["timeout"])
        # what the pool's build_request would send: its headers (httpx's defaults under ours), and the
        # Content-Type of a JSON body; aiohttp adds Host and Content-Length
        self._wire_headers = list(self._pools[0].headers.multi_items())
        self._wire_json_headers = [*self._wire_headers, ("Content-Type", "application/json")]
        self._in_flight = [0] * n_pools
        self._next_pool = 0
        self._stopped: StopRunError | None = None
        self._gate = _Gate(
            outage_window_s,
            self._probe,
            self._limiter.now,
            sleep,
            notice or (lambda _: None),
            self._scrub(base_url),
            probe_every_s,
        )
        #: tasks waiting (for the gate, a slot, the limiter, a back-off) and tasks awaiting an answer
        self._waiting: set[asyncio.Task[Any]] = set()
        self._sending: set[asyncio.Task[Any]] = set()
        #: tasks this client cancelled to stop them: their cancellation becomes the stop error
        self._halted: set[asyncio.Task[Any]] = set()

    @property
    def limiter(self) -> SlidingWindowLimiter:
        return self._limiter

    @property
    def concurrency(self) -> AdaptiveConcurrency:
        """Requests in flight, the limit on them now, and the recent median latency."""
        return self._slots

    @property
    def pool_count(self) -> int:
        return len(self._pools)

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def api_key(self) -> ApiKey | None:
        """The key, masked when printed: what a client of the same run in another process is given."""
        return self._key

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._gate.close()
        await asyncio.gather(*(pool.aclose() for pool in self._pools))

    def interrupt(self, reason: str = "interrupted", *, grace_s: float = 2.0) -> None:
        """Stop sending (Ctrl-C, SIGTERM): see the class docstring. Call it on the client's loop."""
        self.halt(InterruptedRunError(reason), grace_s=grace_s)

    def halt(self, error: StopRunError, *, grace_s: float = 2.0) -> None:
        """Stop every request with ``error``: waits end now, answers in flight get ``grace_s``."""
        self._stop(error)
        if self._sending:
            asyncio.get_running_loop().call_later(grace_s, self._cancel, self._sending)

    def _cancel(self, tasks: set[asyncio.Task[Any]]) -> None:
        for task in list(tasks):
            if not task.done():
                self._halted.add(task)
                task.cancel()

    @contextlib.contextmanager
    def _stoppable(self, tasks: set[asyncio.Task[Any]]) -> Iterator[None]:
        """Marks the current task as waiting or sending, so that ``halt`` can end it with the stop
        error (instead of a bare cancellation, which would tear the caller down)."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            yield
            return
        tasks.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if task in self._halted and self._stopped is not None:
                self._halted.discard(task)
                task.uncancel()
                raise type(self._stopped)(*self._stopped.args) from None
            raise
        finally:
            tasks.discard(task)

    async def _pause(self, seconds: float) -> None:
        with self._stoppable(self._waiting):
            await self._sleep(seconds)

    async def _ride_out(self, error: ConnectFailedError) -> bool:
        """After a failed connection: wait at the gate while the API is unreachable. True when the
        outage was real (a probe failed too), so the failure costs no attempt."""
        if not (self._gate.enabled and error.no_connection):
            return False
        outage = self._gate.failed(str(error))
        with self._stoppable(self._waiting):
            try:
                return await self._gate.wait(outage)
            except UnreachableError as exc:
                raise self._stop(exc) from None

    # -- the three operations -------------------------------------------------------------------

    async def write(
        self, req: FlowStateWrite, *, before: FlowState | None, after: FlowState | None, priority: int = 0
    ) -> WriteResult:
        """Send one write. ``before``/``after`` are the flow's expected states without and with this
        write: they decide, by reading the state back, whether an ambiguous failure took effect.
        Requests of a higher ``priority`` go first when requests wait for a place or a grant: a push
        gives the number of requests the user has left, so the longest sequences start first."""
        started = time.monotonic()
        try:
            body = req.body()
        except (ValueError, TypeError, RecursionError) as exc:
            why = f"the request cannot be encoded, nothing was sent: {exc}"
            return WriteResult(False, None, 0, UNSENDABLE, why, None, False, time.monotonic() - started)
        if not self._send_created_at:
            body.pop("createdAt", None)
        created_at = body.get("createdAt")
        attempts = 0

        def result(
            ok: bool,
            status: int | None,
            error_class: str | None = None,
            message: str | None = None,
            state: UserFlowStates | None = None,
            resolved_by_read: bool = False,
        ) -> WriteResult:
            return WriteResult(
                ok=ok,
                status=status,
                attempts=attempts,
                error_class=error_class,
                message=message,
                state=state,
                resolved_by_read=resolved_by_read,
                elapsed_s=time.monotonic() - started,
            )

        while True:
            attempts += 1
            status: int | None = None
            error: FrigadeError
            try:
                response = await self._exchange("POST", _FLOW_STATES, json=body, priority=priority)
            except ConnectFailedError as exc:
                if await self._ride_out(exc):
                    attempts -= 1  # the API was down: the user's attempts are not spent on it
                    continue
                error = exc
            except AmbiguousError as exc:
                error = exc
            else:
                status = response.status_code
                failure = self._error_for(response)
                if failure is None:
                    try:
                        echoed = UserFlowStates.model_validate_json(response.content)
                    except ValidationError:
                        # the write took effect; only its echo is unreadable
                        return result(True, status, message="the response body is not a flow-state list")
                    return result(True, status, state=echoed)
                if isinstance(failure, StopRunError):
                    raise self._stop(failure)
                if isinstance(failure, RequestRejectedError):
                    return result(False, status, type(failure).__name__, failure.detail)
                error = failure

            if isinstance(error, AmbiguousError):
                # A gateway timeout or a dropped connection can come before the backend applies the
                # write: give it time to land before reading back, or a late write would be resent.
                await self._pause(min(self._backoff_cap, max(self._settle_s, self._backoff_base * 2**attempts)))
                verdict, state, why = await self._resolve(req, created_at, before, after, priority)
                if verdict == "applied":
                    return result(True, status, state=state, resolved_by_read=True, message=why)
                if verdict == "conflict":
                    return result(False, status, CONFLICT, why, state=state, resolved_by_read=True)
                if verdict == "unresolved":
                    return result(False, status, type(error).__name__, why, state=state)
            if attempts >= self._max_attempts:
                return result(False, status, type(error).__name__, f"gave up after {attempts} attempts: {error}")
            if not isinstance(error, AmbiguousError):
                # (after an ambiguous error the wait came before the read-back: resend right after it)
                await self._wait_before_retry(error, attempts)

    async def read_state(self, user_id: str, group_id: str | None = None, *, priority: int = 0) -> UserFlowStates:
        """The user's full state, through the read form of ``POST /v1/public/flowStates``."""
        body = {"userId": user_id} if group_id is None else {"userId": user_id, "groupId": group_id}
        response = await self._call("POST", _FLOW_STATES, json=body, priority=priority)
        try:
            return UserFlowStates.model_validate_json(response.content)
        except ValidationError:
            raise UnexpectedResponseError(
                f"reading the state of user {user_id!r}: the response is not a flow-state list"
            ) from None

    async def list_flows(self) -> list[ExternalizedFlow]:
        """Every flow of ``GET /v1/public/flows``, following offset/limit pages."""
        flows: dict[str, ExternalizedFlow] = {}
        params: dict[str, int] | None = None
        while True:
            response = await self._call("GET", _FLOWS, params=params)
            try:
                page = FlowList.model_validate_json(response.content)
            except ValidationError:
                raise UnexpectedResponseError(f"GET {_FLOWS}: the response is not a flow list") from None
            fresh = [f for f in page.data if f.slug not in flows]
            flows.update((f.slug, f) for f in fresh)
            # no `fresh` means the server ignores offset: stop rather than loop for ever
            if page.limit <= 0 or len(page.data) < page.limit or not fresh:
                return list(flows.values())
            params = {"offset": page.offset + len(page.data), "limit": page.limit}

    # -- retries --------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, int] | None = None, priority: int = 0
    ) -> _Reply:
        """A request that changes nothing, so every transient failure is simply retried."""
        attempts = 0
        while True:
            attempts += 1
            error: FrigadeError
            try:
                response = await self._exchange(method, path, json=json, params=params, priority=priority)
            except ConnectFailedError as exc:
                if await self._ride_out(exc):
                    attempts -= 1
                    continue
                error = exc
            except AmbiguousError as exc:
                error = exc
            else:
                failure = self._error_for(response)
                if failure is None:
                    return response
                if isinstance(failure, StopRunError):
                    raise self._stop(failure)
                if not failure.transient:
                    raise failure
                error = failure
            if attempts >= self._max_attempts:
                raise error
            await self._wait_before_retry(error, attempts)

    async def _wait_before_retry(self, error: FrigadeError, attempts: int) -> None:
        if isinstance(error, ThrottledError) and error.retry_after is not None:
            # A wait of one window is what any throttle means, and the rate cut has it in hand; a
            # longer one is the server asking every sender to stand back.
            if error.retry_after > self._limiter.window:
                self._limiter.pause_for(error.retry_after)
            delay = error.retry_after
        else:
            # full jitter: spreads the retries of many senders that failed together
            delay = self._rand.uniform(0.0, min(self._backoff_cap, self._backoff_base * 2 ** (attempts - 1)))
        await self._pause(delay)

    async def _resolve(
        self,
        req: FlowStateWrite,
        created_at: str | None,
        before: FlowState | None,
        after: FlowState | None,
        priority: int,
    ) -> tuple[_Verdict, UserFlowStates | None, str]:
        """Read the user's state back and decide whether the ambiguous write took effect."""
        try:
            states = await self.read_state(req.user_id, req.group_id, priority=priority)
        except StopRunError:
            raise
        except FrigadeError as exc:
            why = f"the write may have taken effect; reading the state back failed: {exc}"
            return "unresolved", None, why
        flow = states.flow(req.flow_slug)
        if flow is None:
            return "conflict", states, f"flow {req.flow_slug!r} is missing from the state read back"
        now = flow_state_from_wire(flow)
        verdict = _verdict(now, created_at, before, after)
        why = {
            "applied": "the state read back shows the write took effect",
            "not_applied": "the state read back shows the write did not take effect",
            "conflict": "the state read back matches neither the state before nor after the write",
            "unresolved": "the write may have taken effect: no expected state to compare with",
        }[verdict]
        return verdict, states, why

    # -- one HTTP exchange ----------------------------------------------------------------------

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, int] | None = None,
        gated: bool = True,
        priority: int = 0,
    ) -> _Reply:
        self.raise_if_stopped()
        with self._stoppable(self._waiting):
            while True:
                if gated:
                    try:
                        await self._gate.wait_open()
                    except UnreachableError as exc:
                        raise self._stop(exc) from None
                await self._slots.acquire(priority)
                if not gated or self._gate.is_open:
                    break
                # the gate shut while this request waited for its place: the place goes back (a
                # probe may need it) and the request waits at the gate with the others
                self._slots.release()
        sent, answered = math.nan, None
        try:
            with self._stoppable(self._waiting):
                await self._limiter.acquire(priority)
            sent = self._limiter.now()
            index = self._pick_pool()
            self._in_flight[index] += 1
            try:
                # a stop may have come while this request waited its turn
                self.raise_if_stopped()
                with self._stoppable(self._sending):
                    response = await _bare(self._send(index, method, path, json, params), "frigade-send")
                answered = self._limiter.now()
                self._gate.answered()
                if _throttling(response):
                    self._limiter.throttled(sent)
                else:
                    self._limiter.answered(answered)
                return response
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise ConnectFailedError(self._scrub(_connect_reason(exc)), no_connection=True) from exc
            except httpx.PoolTimeout as exc:
                raise ConnectFailedError(self._scrub(f"{type(exc).__name__}: {exc}")) from exc
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError) as exc:
                # our own configuration or request is wrong: retrying cannot help. httpx's message
                # can quote the Authorization header, so only a scrubbed copy leaves this layer.
                raise ClientSetupError(self._scrub(f"{type(exc).__name__}: {exc}")) from None
            except httpx.RequestError as exc:
                # read/write errors, timeouts after connecting, dropped connections, undecodable
                # answers: the request may have been sent
                raise AmbiguousError(self._scrub(f"{type(exc).__name__}: {exc}")) from exc
            finally:
                self._in_flight[index] -= 1
                if isinstance(self._limiter, SettlingLimiter):
                    self._limiter.settle(sent, answered)
        finally:
            self._slots.release(None if answered is None else answered - sent)

    async def _send(self, index: int, method: str, path: str, json: Any, params: dict[str, int] | None) -> _Reply:
        wire = self._wires[index]
        if wire is not None:
            url = f"{self._base}{path}?{urlencode(params)}" if params else self._base + path
            body = None if json is None else _json_body(json)
            headers = self._wire_headers if body is None else self._wire_json_headers
            return await wire.exchange(method, url, headers, body, self._wire_timeout)
        pool, transport = self._pools[index], self._transports[index]
        if transport is None:
            return await pool.request(method, path, json=json, params=params)
        # what the pool's build_request makes (its base URL, headers and timeout), without its merging
        # of cookies and query parameters this client never sets
        request = httpx.Request(
            method, self._base + path, params=params, json=json, headers=pool.headers, extensions=self._extensions
        )
        response = await transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _probe(self) -> None:
        """The gate's cheap read: any HTTP answer at all proves the API reachable."""
        await self._exchange("GET", _FLOWS, gated=False)

    def _stop(self, error: StopRunError) -> StopRunError:
        """The first stop stops everything: the gate refuses, and every other waiting request (for
        the limiter, a back-off, the gate) ends now with the stop instead of when its wait is over."""
        if self._stopped is None:
            self._stopped = error
            self._gate.abort(error)
            self._cancel(self._waiting - {asyncio.current_task()})
        return error

    @property
    def stopped(self) -> StopRunError | None:
        """The error that stopped this client, if any."""
        return self._stopped

    def raise_if_stopped(self) -> None:
        """After an auth failure, the MAU cap or an interrupt nothing more is sent (it could only fail
        the same way, or was asked not to): the stop is raised again, as a new error of its class."""
        if self._stopped is not None:
            raise type(self._stopped)(*self._stopped.args)

    def _pick_pool(self) -> int:
        """The least busy pool, ties broken round robin so that idle pools all get used."""
        n = len(self._pools)
        start = self._next_pool
        self._next_pool = (start + 1) % n
        return min(((start + k) % n for k in range(n)), key=self._in_flight.__getitem__)

    def _error_for(self, response: _Reply) -> FrigadeError | None:
        status = response.status_code
        if 200 <= status < 300:
            return None
        text = self._scrub(_error_text(response))
        if status in (401, 403):
            return AuthError(f"{status}: the API key was refused ({text})")
        if status == 429:
            # Matched on its stable core, so a reworded or list-form message still stops the run.
            if _MAU_MARKER in text.lower():
                return MauCapError(text)
            return ThrottledError(f"429: {text}", _retry_after(response))
        if status >= 500:
            return AmbiguousError(f"{status}: {text}")
        return RequestRejectedError(status, text)

    def _scrub(self, text: str) -> str:
        if self._key is None:
            return text
        return text.replace(self._key.reveal(), self._key.masked)


class _Gate:
    """The connectivity gate every request passes (see ``FrigadeClient``). Time comes from the
    limiter's clock and the client's sleep, so tests run it on virtual time."""

    def __init__(
        self,
        window_s: float,
        probe: Callable[[], Awaitable[None]],
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        notice: Callable[[str], None],
        url: str,
        every_s: tuple[float, float],
    ) -> None:
        self.window_s = window_s
        self._probe, self._clock, self._sleep, self._notice, self._url = probe, clock, sleep, notice, url
        self._first_s, self._cap_s = every_s
        self._down_since: float | None = None
        self._reason = ""
        self._outage = 0
        #: outages that a failed probe confirmed (a blip that the first probe saw over is not one)
        self._confirmed: set[int] = set()
        self._fatal: StopRunError | None = None
        self._settled = asyncio.Event()
        self._settled.set()
        self._prober: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    @property
    def is_open(self) -> bool:
        return self._down_since is None and self._fatal is None

    def failed(self, reason: str) -> int:
        """A connection could not be made: shut the gate (and start probing). Returns the outage's number."""
        self._reason = reason
        if self._down_since is None and self._fatal is None:
            self._outage += 1
            self._down_since = self._clock()
            self._settled.clear()
            # a finished task keeps its context, and this one is kept until the next outage
            self._prober = _bare(self._probe_until_up(self._outage), "frigade-probe")
        return self._outage

    def answered(self) -> None:
        """An HTTP answer arrived: the API is reachable."""
        if self._down_since is not None and self._fatal is None:
            self._open()

    async def wait_open(self) -> None:
        """Until the gate is open (at once when it is); raises the stop error past the window."""
        while self._down_since is not None or self._fatal is not None:
            if self._fatal is not None:
                raise type(self._fatal)(*self._fatal.args)
            await self._settled.wait()

    async def wait(self, outage: int) -> bool:
        """``wait_open``, then whether ``outage`` was a real one."""
        await self.wait_open()
        return outage in self._confirmed

    def abort(self, error: StopRunError) -> None:
        """The client stopped: every waiter gets ``error``."""
        if self._fatal is None:
            self._fatal = error
        self._settled.set()
        self.close()

    def close(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()

    def _open(self) -> None:
        if self._down_since is not None and self._outage in self._confirmed:
            down = self._clock() - self._down_since
            self._notice(f"{self._url} answers again after {down:.1f} s: sending resumes")
        self._down_since = None
        self._settled.set()

    async def _probe_until_up(self, outage: int) -> None:
        delay = self._first_s
        while self._down_since is not None and self._fatal is None:
            left = self._down_since + self.window_s - self._clock()
            if left <= 0:
                self._fatal = UnreachableError(f"cannot reach {self._url}: {self._reason}")
                self._settled.set()
                return
            await self._sleep(min(delay, left))
            delay = min(delay * 2, self._cap_s)
            if self._down_since is None or self._fatal is not None:
                return  # an answer to another request opened the gate meanwhile
            try:
                await self._probe()
            except ConnectFailedError as exc:
                self._reason = str(exc)
                if outage not in self._confirmed:
                    self._confirmed.add(outage)
                    self._notice(
                        f"cannot reach {self._url}: {self._reason}; every sender is paused while a probe "
                        f"retries, for up to {_duration(self.window_s)} (--outage-window)"
                    )
                continue
            except StopRunError as exc:
                self.abort(exc)
                return
            except FrigadeError:
                pass  # connected, then failed: reachable all the same
            self._open()
            return


def _bare(call: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
    """``call`` as a task of its own in an empty context. What the client starts that outlives its
    caller holds the context it started in: a connection registers its reader in the context of the
    request that opened it, and holds it as long as it stays open; opened inside a Prefect task run,
    it kept the run's parameters and result (an export's whole analysis, a push's pending plan) alive
    until the flow run ended. An awaiting caller's cancellation reaches the task."""
    return asyncio.create_task(call, name=name, context=contextvars.Context())


def _throttling(response: _Reply) -> bool:
    """A 429 that is not the MAU cap, or a 503 with Retry-After: the API asks for a lower rate."""
    status = response.status_code
    if status == 429:
        return _MAU_MARKER_BYTES not in response.content.lower()
    return status == 503 and "Retry-After" in response.headers


def _json_body(value: Any) -> bytes:
    """A JSON body exactly as httpx encodes one (``httpx._content.encode_json``)."""
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _connect_reason(exc: Exception) -> str:
    """httpx's message, and the operating system's reason when httpx hides it (e.g. "All connection
    attempts failed" for a refused connection)."""
    text = f"{type(exc).__name__}: {exc}"
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            why = os.strerror(cause.errno) if isinstance(cause.errno, int) and cause.errno > 0 else cause.strerror
            return text if not why or why in text else f"{text} ({why})"
        cause = cause.__cause__ or cause.__context__
    return text


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m {s:02d}s" if m else f"{s} s"


def _verdict(now: FlowState, created_at: str | None, before: FlowState | None, after: FlowState | None) -> _Verdict:
    state = now.logical()
    if before is not None and after is not None and before.logical() == after.logical():
        # a write that changes nothing logically: only its timestamp can tell
        if state != before.logical():
            return "conflict"
        if created_at is not None and same_instant(now.last_action_at, created_at):
            return "applied"
        if same_instant(now.last_action_at, before.last_action_at):
            return "not_applied"
        # the time moved but not to ours (e.g. a server that ignores createdAt): never risk a duplicate
        return "applied"
    if after is not None and state == after.logical():
        return "applied"
    if before is not None and state == before.logical():
        return "not_applied"
    if before is None or after is None:
        return "unresolved"
    return "conflict"


def _error_text(response: _Reply) -> str:
    try:
        return ErrorBody.model_validate_json(response.content).text()
    except ValidationError:
        pass
    text = response.text.strip()
    if not text:
        return response.reason_phrase or f"HTTP {response.status_code}"
    return text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "…"


def _retry_after(response: _Reply) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
