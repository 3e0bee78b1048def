"""What a backfilled sample must show on the emulator: each user's state of every active flow, read
back over HTTP, is the sample's expected.json (flows it does not name are untouched)."""

from __future__ import annotations

from typing import Any

import httpx

from emulator.embedded import EmbeddedEmulator
from frigade.catalog import Catalog
from frigade.models import UserFlowStates, flow_state_from_wire
from frigade.rules import initial_state
from samples.exports import state_dict


def assert_landed(emulator: EmbeddedEmulator, expected: dict[str, Any], cat: Catalog) -> None:
    with httpx.Client(base_url=emulator.url, headers=emulator.headers(private=False)) as client:
        for user, flows in sorted(expected["users"].items()):
            answer = client.get("/v1/public/flowStates", params={"userId": user})
            answer.raise_for_status()
            got = UserFlowStates.model_validate(answer.json())
            for flow in cat.active:
                wire = got.flow(flow.slug)
                assert wire is not None
                want = flows.get(flow.slug, state_dict(initial_state(flow.step_ids)))
                assert state_dict(flow_state_from_wire(wire)) == want, (user, flow.slug)
