"""An httpx transport that sends through one aiohttp session.

The job keeps httpx's API (and ``httpx.MockTransport`` as its test seam) while the bytes go through
aiohttp, whose per-request cost is a fraction of httpcore's (bench/RESULTS.md, benchmarks 2 and 6).
What matters is that every aiohttp failure becomes the httpx error of the same meaning, because the
client decides from the error class alone whether a write was surely not sent (safe to resend),
may have been sent (read the state back first), or can never succeed (stop):

- ``ClientConnectorError`` (refused, DNS, TLS handshake, proxy): no byte left -> ``ConnectError``;
- ``ConnectionTimeoutError`` (no connection in time, from the pool or the socket): not sent ->
  ``ConnectTimeout``;
- ``SocketTimeoutError`` (no answer in time): may have been sent -> ``ReadTimeout``;
- ``ServerDisconnectedError`` or a malformed answer (``ClientResponseError``): may have been sent ->
  ``RemoteProtocolError``;
- ``ClientPayloadError``, ``ClientOSError`` (a reset mid-exchange), any other ``ClientError``: may have
  been sent -> ``ReadError``;
- ``InvalidUrlClientError`` / ``NonHttpUrlClientError``: our configuration is wrong ->
  ``UnsupportedProtocol``.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport", "Answer", "client_timeout"]

#: answer headers that describe the wire form: the body handed to httpx is already decoded
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def client_timeout(t: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's timeouts (``httpx.Timeout.as_dict()``) in aiohttp's terms: waiting for a pooled
    connection and connecting count as connecting (both mean nothing was sent); read is the wait
    between chunks."""
    pool, connect, read = t.get("pool"), t.get("connect"), t.get("read")
    waits = [x for x in (pool, connect) if x is not None]
    return aiohttp.ClientTimeout(
        total=None, connect=sum(waits) if waits else None, sock_connect=connect, sock_read=read
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, read whole: what the client needs of an ``httpx.Response``, at a fraction of
    its cost per request. ``headers`` look names up case-insensitively."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        """The body decoded as httpx would: by the charset the Content-Type names, else UTF-8."""
        message = Message()
        message["content-type"] = self.headers.get("content-type", "")
        charset = message.get_content_charset() or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    @property
    def reason_phrase(self) -> str:
        return httpx.codes.get_reason_phrase(self.status_code)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent through one ``aiohttp.ClientSession`` of at most ``limit`` connections,
    created on first use inside the running event loop.

    ``exchange`` is the wire itself, for a caller that builds its requests once (``FrigadeClient``):
    it skips building an ``httpx.Request`` and ``httpx.Response`` per request, and raises the same
    httpx errors as ``handle_async_request``, which is built on it."""

    def __init__(self, limit: int, *, ssl_context: ssl.SSLContext | None = None, trust_env: bool | None = None) -> None:
        self._limit = limit
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        # With trust_env aiohttp looks the proxy up in a thread for every request (a tenth of the CPU
        # of a push): only when a proxy is configured at all, as httpx would honour it.
        self._trust_env = bool(urllib.request.getproxies()) if trust_env is None else trust_env
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=self._trust_env)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # aiohttp sets Host and Content-Length itself, from the URL and the body
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in ("host", "content-length")]
        t: dict[str, Any] = request.extensions.get("timeout", {})
        answer = await self.exchange(
            request.method, str(request.url), headers, request.content, client_timeout(t), request=request
        )
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _WIRE_HEADERS]
        return httpx.Response(answer.status_code, headers=kept, content=answer.content, request=request)

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        limits: aiohttp.ClientTimeout,
        *,
        request: httpx.Request | None = None,
    ) -> Answer:
        """One request, its answer read whole (the body decoded), or the httpx error of the failure's
        meaning (the module docstring). ``headers`` must not name Host or Content-Length."""
        try:
            async with self._session_now().request(
                method, url, headers=headers, data=body or None, timeout=limits, allow_redirects=False
            ) as answer:
                return Answer(answer.status, answer.headers, await answer.read())
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(_text(exc), request=request) from exc
        except aiohttp.SocketTimeoutError as exc:
            raise httpx.ReadTimeout(_text(exc), request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            # the OS's own words ("Connection refused"), not aiohttp's ssl:default bookkeeping
            why = exc.os_error.strerror or str(exc.os_error) if exc.os_error else str(exc)
            raise httpx.ConnectError(f"cannot connect to {exc.host}:{exc.port}: {why}", request=request) from exc
        except (aiohttp.InvalidUrlClientError, aiohttp.NonHttpUrlClientError) as exc:
            raise httpx.UnsupportedProtocol(_text(exc), request=request) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
            raise httpx.RemoteProtocolError(_text(exc), request=request) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise httpx.ReadError(_text(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
