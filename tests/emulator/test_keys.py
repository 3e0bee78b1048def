"""Keys over real HTTP: 403 (never 401) for a missing, unknown or wrong-kind key; flowResponses only for
the private key."""

from __future__ import annotations

import httpx
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.rules import Action
from tests.emulator._http import FLOW, STATES, STEPS, write_body

FORBIDDEN = {"statusCode": 403, "message": "Forbidden resource", "error": "Forbidden"}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer api_public_wrong", "Basic api_public_emulator", "api_public_emulator"],
    ids=["missing", "empty", "no key", "unknown key", "not bearer", "no scheme"],
)
def test_missing_or_unknown_keys_get_403(emu: EmbeddedEmulator, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=emu.url, headers=headers) as client:
        for answer in (
            client.post(STATES, json=write_body("u", Action.STARTED_FLOW)),
            client.get(STATES, params={"userId": "u"}),
            client.get("/v1/public/flows"),
        ):
            assert answer.status_code == 403
            assert answer.json() == FORBIDDEN
    assert emu.history("u") == []


def test_the_public_key_is_refused_on_private_paths(emu: EmbeddedEmulator, client: httpx.Client) -> None:
    assert client.post(STATES, json=write_body("u", Action.STARTED_FLOW)).status_code == 201
    for method, path in [
        ("GET", "/v1/users?userId=u"),
        ("DELETE", f"/v1/userFlowStates/{FLOW}/user_x"),
        ("GET", "/_emulator/stats"),
        ("POST", "/_emulator/reset"),
        ("GET", "/_emulator/history?userId=u"),
    ]:
        answer = client.request(method, path)
        assert answer.status_code == 403, path
        assert answer.json() == FORBIDDEN
    assert len(emu.history("u")) == 1  # the refused reset did nothing


def test_the_private_key_works_everywhere_and_adds_flow_responses(
    client: httpx.Client, private_client: httpx.Client
) -> None:
    public = client.post(STATES, json=write_body("u", Action.COMPLETED_STEP, STEPS[0])).json()
    flow = public["eligibleFlows"][0]
    assert "flowResponses" not in flow["$state"]
    assert all("flowResponses" not in s["$state"] for s in flow["data"]["steps"])

    private = private_client.post(STATES, json=write_body("u", Action.STARTED_STEP, STEPS[1])).json()
    responses = private["eligibleFlows"][0]["$state"]["flowResponses"]
    assert [(r["actionType"], r["stepId"]) for r in responses] == [
        ("COMPLETED_STEP", STEPS[0]),
        ("STARTED_STEP", STEPS[1]),
    ]
    assert all(isinstance(r["data"], str) for r in responses)
    assert private_client.get("/v1/users", params={"userId": "u"}).status_code == 200
    assert "flowResponses" not in client.get(STATES, params={"userId": "u"}).json()["eligibleFlows"][0]["$state"]


@pytest.mark.slow
def test_custom_keys_replace_the_defaults_and_never_reach_the_command_line_or_log() -> None:
    with EmbeddedEmulator(
        public_key="api_public_custom123", private_key="api_private_custom456", log_level="debug"
    ) as emu:
        with httpx.Client(base_url=emu.url) as client:
            ok = client.get(STATES, params={"userId": "u"}, headers={"Authorization": "Bearer api_public_custom123"})
            assert ok.status_code == 200
            default = client.get(
                STATES, params={"userId": "u"}, headers={"Authorization": "Bearer api_public_emulator"}
            )
            assert default.status_code == 403
        assert emu.stats()["requests_by_status"] == {"200": 1, "403": 1}
        try:
            with open(f"/proc/{emu.pid}/cmdline", "rb") as cmdline:
                assert b"custom" not in cmdline.read()
        except FileNotFoundError:  # not Linux
            pass
        log = emu.log_text()
    assert "custom123" not in log
    assert "custom456" not in log
