"""The client hands its requests to the transport itself: each must be the request httpx's own
AsyncClient would have sent (URL with its query, headers, body, timeout), and an answer must come back
read and closed, for the writes, the reads and the catalog alike."""

from __future__ import annotations

import asyncio
import json

import httpx

from frigade.client import FrigadeClient
from frigade.models import FlowStateWrite
from frigade.rules import Action
from frigade.secret import ApiKey
from tests.frigade.fake_api import BASE_URL, KEY, FakeFrigade

FLOWS = {"onboarding": ("welcome", "connect"), "tour": ("a", "b")}


def test_each_request_is_the_one_the_async_client_would_build() -> None:
    # one flow per page: the catalog's second page is asked for with query parameters
    fake = FakeFrigade(FLOWS, page_size=1)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake.handle(request)

    async def scenario() -> list[httpx.Request]:
        client = FrigadeClient(
            BASE_URL, ApiKey(KEY), rate=1000, timeout=7.0, transport_factory=lambda: httpx.MockTransport(handler)
        )
        async with client:
            write = FlowStateWrite(user_id="u 1", flow_slug="onboarding", action_type=Action.STARTED_FLOW)
            result = await client.write(write, before=None, after=None)
            assert result.ok
            await client.read_state("u 1", "g/1")
            await client.list_flows()
        reference = httpx.AsyncClient(
            base_url=BASE_URL,
            headers={"Accept": "application/json", "User-Agent": "frigade-migrate", "Authorization": f"Bearer {KEY}"},
            timeout=httpx.Timeout(7.0),
        )
        return [
            reference.build_request(
                r.method,
                r.url.path,
                params=dict(r.url.params) or None,
                json=json.loads(r.content) if r.content else None,
            )
            for r in seen
        ]

    expected = asyncio.run(scenario())
    assert [r.method for r in seen[:2]] == ["POST", "POST"]
    assert {r.method for r in seen[2:]} == {"GET"}
    assert seen[0].url.path.endswith("/v1/public/flowStates")
    assert json.loads(seen[1].content) == {"userId": "u 1", "groupId": "g/1"}
    assert any(r.url.params for r in seen[2:]), [str(r.url) for r in seen]
    for got, want in zip(seen, expected, strict=True):
        assert str(got.url) == str(want.url)
        assert sorted(got.headers.multi_items()) == sorted(want.headers.multi_items())
        assert got.content == want.content
        assert got.extensions["timeout"] == want.extensions["timeout"]
