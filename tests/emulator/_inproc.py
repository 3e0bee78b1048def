"""A synchronous httpx transport that runs the app in-process (starlette's TestClient is deprecated in
favour of a package this project does not install)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette


class InProcess(httpx.BaseTransport):
    """Runs the app's lifespan and every request on one private event loop."""

    def __init__(self, app: Starlette) -> None:
        self._loop = asyncio.new_event_loop()
        self._asgi = httpx.ASGITransport(app=app)
        self._lifespan: Any = app.router.lifespan_context(app)
        self._loop.run_until_complete(self._lifespan.__aenter__())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def go() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

        return self._loop.run_until_complete(go())

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
            self._loop.close()


def in_process_client(app: Starlette, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(transport=InProcess(app), base_url="http://emulator", headers=headers)
