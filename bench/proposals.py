"""A prototype of the client change RESULTS.md still recommends, so its measured gain can be reproduced
(``python -m bench.push_ceiling --proposal``). Not the job's code.

``AiohttpTransport`` (benchmark 2): about 90 % of the job's client CPU per request is httpx/httpcore;
an ``httpx.AsyncBaseTransport`` backed by one aiohttp session keeps httpx's API and its
``MockTransport`` test seam, and drops httpcore. (The limiter prototype that used to live here is
adopted: ``frigade.limiter.SettlingLimiter``.)
"""

from __future__ import annotations

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

#: answers seen before the smallest round trip is trusted
TRUST_AFTER = 200
#: slack subtracted from the smallest round trip (its own send and receive time)
SLACK_S = 0.005


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent by an aiohttp session (created on first use, in the running loop)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        headers = [(k, v) for k, v in request.headers.multi_items() if k not in ("host", "content-length")]
        try:
            async with self._session.request(
                request.method, str(request.url), headers=headers, data=request.content
            ) as answer:
                body = await answer.read()
                return httpx.Response(answer.status, headers=list(answer.raw_headers), content=body, request=request)
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise httpx.ReadError(str(exc), request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
