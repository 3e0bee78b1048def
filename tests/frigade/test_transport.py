"""The aiohttp transport against real sockets on 127.0.0.1 that fail in each way a network can: every
aiohttp failure must become the httpx error with the same meaning (surely not sent, may have been
sent, can never work), and so the client's own error class, because that decides whether a write is
resent, read back first, or stops the run."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import gzip
import json
import socket
import weakref
from collections.abc import Awaitable, Callable
from typing import Literal

import httpx
import pytest

from frigade.client import FrigadeClient
from frigade.errors import (
    AmbiguousError,
    ClientSetupError,
    ConnectFailedError,
    FrigadeError,
    MauCapError,
    RequestRejectedError,
    ThrottledError,
)
from frigade.secret import ApiKey
from frigade.transport import AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head, await reader.readexactly(length)


class _Served:
    """A server on 127.0.0.1 whose connections are all closed when the block ends (a handler left
    waiting would otherwise leave its socket to the garbage collector, after the loop is gone)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        finally:
            writer.close()

    async def __aenter__(self) -> _Served:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for w in self._writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        await self._server.wait_closed()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _send(url: str, read_s: float = 2.0) -> httpx.Response:
    async with httpx.AsyncClient(transport=AiohttpTransport(2), timeout=read_s) as client:
        return await client.post(f"{url}/v1/public/flowStates", json={"userId": "u"})


def _raises(handler: Handler | None, expected: type[Exception], timeout: float = 2.0) -> None:
    async def main() -> None:
        if handler is None:
            with pytest.raises(expected):
                await _send(f"http://127.0.0.1:{_closed_port()}", timeout)
            return
        async with _Served(handler) as served:
            with pytest.raises(expected):
                await _send(served.url, timeout)

    asyncio.run(main())


def test_a_refused_connection_is_a_connect_error_so_surely_not_sent() -> None:
    _raises(None, httpx.ConnectError)


async def _close_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.close()


def test_a_connection_dropped_after_the_request_is_ambiguous() -> None:
    _raises(_close_after_reading, httpx.RemoteProtocolError)


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)


def test_no_answer_in_time_is_a_read_timeout_so_ambiguous() -> None:
    _raises(_never_answer, httpx.ReadTimeout, timeout=0.3)


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"this is not HTTP at all\r\n\r\n")
    await writer.drain()
    writer.close()


def test_an_answer_that_is_not_http_is_a_protocol_error_so_ambiguous() -> None:
    _raises(_garbage, httpx.RemoteProtocolError)


async def _truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":')
    await writer.drain()
    writer.close()


def test_a_body_cut_short_is_a_read_error_so_ambiguous() -> None:
    _raises(_truncated, httpx.ReadError)


def test_waiting_too_long_for_a_pooled_connection_is_a_connect_timeout_so_not_sent() -> None:
    async def main() -> None:
        timeout = httpx.Timeout(3.0, pool=0.2, connect=0.2)
        async with (
            _Served(_never_answer) as served,
            httpx.AsyncClient(transport=AiohttpTransport(1), timeout=timeout) as c,
        ):
            busy = asyncio.create_task(c.post(f"{served.url}/x", json={}))
            await asyncio.sleep(0.1)
            with pytest.raises(httpx.ConnectTimeout):
                await c.post(f"{served.url}/y", json={})
            busy.cancel()
            with pytest.raises(asyncio.CancelledError):
                await busy

    asyncio.run(main())


def test_an_unusable_url_is_a_setup_error() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(transport=AiohttpTransport(1)) as c:
            with pytest.raises(httpx.UnsupportedProtocol):
                await c.post("ftp://127.0.0.1/x", json={})

    asyncio.run(main())


def test_a_good_exchange_keeps_method_headers_body_and_decodes_gzip() -> None:
    seen: dict[str, bytes] = {}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await _read_request(reader)
        seen["head"], seen["body"] = head, body
        payload = gzip.compress(json.dumps({"eligibleFlows": [], "ineligibleFlows": ["f"]}).encode())
        writer.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        writer.close()

    async def main() -> httpx.Response:
        headers = {"Authorization": "Bearer k"}
        async with _Served(answer) as served, httpx.AsyncClient(transport=AiohttpTransport(1), headers=headers) as c:
            return await c.post(f"{served.url}/v1/public/flowStates", json={"userId": "u1"})

    response = asyncio.run(main())
    assert response.status_code == 201
    assert response.json() == {"eligibleFlows": [], "ineligibleFlows": ["f"]}
    assert seen["head"].startswith(b"POST /v1/public/flowStates HTTP/1.1")
    assert b"authorization: bearer k" in seen["head"].lower()
    assert json.loads(seen["body"]) == {"userId": "u1"}


@pytest.mark.parametrize(
    ("handler", "error"),
    [(None, ConnectFailedError), (_close_after_reading, AmbiguousError), (_garbage, AmbiguousError)],
)
def test_the_client_on_its_default_transport_classifies_each_failure(handler: Handler | None, error: type) -> None:
    """FrigadeClient uses the aiohttp transport by default: its exchange names the same class."""

    async def exchange(url: str) -> None:
        async with FrigadeClient(url, ApiKey("api_private_secret_123"), rate=1000, max_attempts=1) as client:
            with pytest.raises(error) as caught:
                await client._exchange("POST", "/v1/public/flowStates", json={"userId": "u"})
            assert "api_private_secret_123" not in str(caught.value)

    async def main() -> None:
        if handler is None:
            await exchange(f"http://127.0.0.1:{_closed_port()}")
            return
        async with _Served(handler) as served:
            await exchange(served.url)

    asyncio.run(main())


def test_a_setup_error_on_the_default_transport_stops_and_hides_the_key() -> None:
    async def main() -> None:
        async with FrigadeClient("ftp://127.0.0.1", ApiKey("api_private_secret_123"), rate=1000) as client:
            with pytest.raises(ClientSetupError) as caught:
                await client._exchange("POST", "/v1/public/flowStates", json={"userId": "u"})
            assert "api_private_secret_123" not in str(caught.value)

    asyncio.run(main())


def test_the_clients_own_wire_sends_what_the_async_client_would_build() -> None:
    """FrigadeClient hands its aiohttp wire prebuilt headers and JSON bytes, skipping httpx's Request:
    on the socket each request must still be the one ``AsyncClient.build_request`` makes."""
    heads: list[bytes] = []
    bodies: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head)
            bodies.append(body)
            flows = b'{"data":[],"offset":0,"limit":0}'
            payload = flows if head.startswith(b"GET") else b'{"eligibleFlows":[],"ineligibleFlows":[]}'
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n")
            writer.write(f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()

    key = "api_private_secret_123"
    body = {"userId": "ü 1", "flowSlug": "f", "actionType": "STARTED_FLOW", "data": {"n": 1.5, "s": "é"}}

    async def main() -> str:
        async with _Served(answer) as served:
            async with FrigadeClient(served.url, ApiKey(key), rate=1000, timeout=7.0) as client:
                await client._exchange("POST", "/v1/public/flowStates", json=body)
                await client._exchange("GET", "/v1/public/flows", params={"offset": 5, "limit": 2})
            return served.url

    url = asyncio.run(main())
    reference = httpx.AsyncClient(
        base_url=url,
        headers={"Accept": "application/json", "User-Agent": "frigade-migrate", "Authorization": f"Bearer {key}"},
    )
    expected = [
        reference.build_request("POST", "/v1/public/flowStates", json=body),
        reference.build_request("GET", "/v1/public/flows", params={"offset": 5, "limit": 2}),
    ]
    for head, got_body, want in zip(heads, bodies, expected, strict=True):
        start, *lines = head.decode("latin-1").strip().split("\r\n")
        assert start == f"{want.method} {want.url.raw_path.decode()} HTTP/1.1"
        got = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        assert got == {k.lower(): v for k, v in want.headers.items()}
        assert got_body == want.content


def test_answers_off_the_clients_own_wire_are_judged_like_httpx_responses() -> None:
    """Status, Retry-After (any case) and the error text come from an ``Answer`` as from httpx's
    response: a 429 with Retry-After is a throttle to wait out, the MAU message stops, a 5xx is
    ambiguous, a 400's text (JSON or not, in the charset it declares, else UTF-8) is the detail."""
    answers = [
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\nContent-Type: application/json\r\n",
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\n",
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n",
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n",
    ]
    bodies = [
        b'{"statusCode":429,"message":"slow down","error":"Too Many Requests"}',
        b'{"statusCode":429,"message":"Maximum allowed MAUs reached","error":"Too Many Requests"}',
        b"",
        "caf\xe9 is not a flow".encode("latin-1"),
        "caf\xe9 is not a flow".encode("latin-1"),
    ]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for head, body in zip(answers, bodies, strict=True):
            await _read_request(reader)
            writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()

    async def main() -> list[FrigadeError | None]:
        async with _Served(answer) as served, FrigadeClient(served.url, None, rate=1000) as client:
            replies = [await client._exchange("POST", "/v1/public/flowStates", json={"userId": "u"}) for _ in answers]
            return [client._error_for(r) for r in replies]

    throttled, capped, outage, rejected, declared = asyncio.run(main())
    assert isinstance(throttled, ThrottledError)
    assert throttled.retry_after == 3.0
    assert "slow down" in str(throttled)
    assert isinstance(capped, MauCapError)
    assert isinstance(outage, AmbiguousError)
    assert "503: Service Unavailable" in str(outage)
    assert isinstance(rejected, RequestRejectedError)
    assert rejected.detail == "caf\ufffd is not a flow"
    assert isinstance(declared, RequestRejectedError)
    assert declared.detail == "caf\xe9 is not a flow"


def test_the_clients_own_wire_decodes_a_gzip_answer() -> None:
    payload = gzip.compress(b'{"eligibleFlows":[],"ineligibleFlows":["f"]}')

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        writer.write(head + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()

    async def main() -> bytes:
        async with _Served(answer) as served, FrigadeClient(served.url, None, rate=1000) as client:
            reply = await client._exchange("POST", "/v1/public/flowStates", json={"userId": "u"})
            assert reply.status_code == 201
            return reply.content

    assert json.loads(asyncio.run(main())) == {"eligibleFlows": [], "ineligibleFlows": ["f"]}


class _Caller:
    """What a caller's context can hold: a Prefect task run's parameters and result, say."""


async def _keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    payload = json.dumps({"eligibleFlows": [], "ineligibleFlows": []}).encode()
    while True:
        try:
            await _read_request(reader)
        except asyncio.IncompleteReadError:
            return  # the client closed the connection
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        await writer.drain()


@pytest.mark.parametrize("http", ["aiohttp", "httpx"])
def test_a_connection_kept_open_keeps_nothing_of_the_caller_that_opened_it(http: Literal["aiohttp", "httpx"]) -> None:
    """A connection registers its reader in the context of the request that opened it and holds it
    while it stays open, for the whole run: the client opens its connections in an empty context, so
    that a caller's context (a Prefect task run's, with an export's whole analysis) can go."""
    held: contextvars.ContextVar[_Caller] = contextvars.ContextVar("held")

    async def main() -> None:
        async with _Served(_keep_alive) as served, FrigadeClient(served.url, ApiKey("k"), rate=1000, http=http) as c:
            caller = _Caller()
            gone = weakref.ref(caller)

            async def call(mine: _Caller) -> None:
                held.set(mine)
                await c.read_state("u1")

            await asyncio.create_task(call(caller))  # a task of its own: a context of its own, as a task run's
            del caller
            await asyncio.sleep(0)  # the loop lets go of the handle that woke this task with the other's end
            gc.collect()
            assert gone() is None, "the open connection kept the caller's context"
            await c.read_state("u2")  # the connection is still open and still serves

    asyncio.run(main())
