"""The app in-process (starlette's httpx.Client): the 400 matrix, the other endpoints, the OpenAPI document.
Behaviour over real HTTP is covered by the other test modules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from emulator.app import FAULT_KINDS, EmulatorConfig, create_app
from emulator.sample import sample_catalog
from frigade.catalog import catalog_from_api
from frigade.errors import MAU_CAP_MESSAGE
from frigade.models import FlowList, UserFlowStates
from frigade.rules import Action
from tests.emulator._http import FLOW, STATES, STEPS
from tests.emulator._inproc import in_process_client

PUBLIC = {"Authorization": "Bearer api_public_emulator"}
PRIVATE = {"Authorization": "Bearer api_private_emulator"}
ALL_ACTIONS = ", ".join(a.value for a in Action)


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[httpx.Client]:
    app = create_app(EmulatorConfig(catalog=sample_catalog(), db_path=tmp_path / "app.db"))
    with in_process_client(app, PUBLIC) as client:
        yield client


def _w(**fields: Any) -> dict[str, Any]:
    return {"userId": "u", "flowSlug": FLOW, **fields}


BAD_WRITES: list[tuple[str, Any, str | list[str]]] = [
    ("no user", {}, "userId should not be empty"),
    ("empty user", {"userId": ""}, "userId should not be empty"),
    ("user not a string", {"userId": 5}, "userId must be a string"),
    ("group not a string", {"userId": "u", "groupId": 3}, "groupId must be a string"),
    ("empty user in a write", _w(userId="", actionType="STARTED_FLOW"), "userId should not be empty"),
    ("no flowSlug", {"userId": "u", "actionType": "STARTED_FLOW"}, "flowSlug should not be empty"),
    ("no actionType", _w(), "actionType should not be empty"),
    (
        "unknown actionType",
        _w(actionType="FINISHED_FLOW"),
        f"actionType must be one of the following values: {ALL_ACTIONS}",
    ),
    (
        "no stepId on a step action",
        _w(actionType="COMPLETED_STEP"),
        "stepId should not be empty for COMPLETED_STEP",
    ),
    (
        "stepId on a flow action",
        _w(actionType="STARTED_FLOW", stepId=STEPS[0]),
        "stepId must not be given for STARTED_FLOW",
    ),
    ("unknown flow", _w(flowSlug="flow_nope", actionType="STARTED_FLOW"), "unknown flowSlug 'flow_nope'"),
    (
        "archived flow",
        _w(flowSlug="flow_legacy_survey", actionType="STARTED_FLOW"),
        "flowSlug 'flow_legacy_survey' is ARCHIVED, not ACTIVE",
    ),
    ("unknown step", _w(actionType="STARTED_STEP", stepId="nope"), f"unknown stepId 'nope' in flow '{FLOW}'"),
    ("data a string", _w(actionType="STARTED_FLOW", data='{"a": 1}'), "data must be an object"),
    ("data a list", _w(actionType="STARTED_FLOW", data=[1]), "data must be an object"),
    (
        "createdAt not ISO",
        _w(actionType="STARTED_FLOW", createdAt="yesterday"),
        "createdAt must be a valid ISO 8601 date string",
    ),
    (
        "createdAt a number",
        _w(actionType="STARTED_FLOW", createdAt=1700000000),
        "createdAt must be a valid ISO 8601 date string",
    ),
    (
        "a step without flow and action",
        {"userId": "u", "stepId": STEPS[0]},
        ["flowSlug should not be empty", "actionType should not be empty"],
    ),
    (
        "several fields",
        {"userId": "", "flowSlug": "flow_x", "actionType": "NOPE", "data": 1},
        [
            "userId should not be empty",
            "unknown flowSlug 'flow_x'",
            f"actionType must be one of the following values: {ALL_ACTIONS}",
            "data must be an object",
        ],
    ),
    ("body a list", [1, 2], "body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in BAD_WRITES], ids=[c[0] for c in BAD_WRITES])
def test_bad_writes_get_400_with_the_documented_body(
    app_client: httpx.Client, body: Any, message: str | list[str]
) -> None:
    answer = app_client.post(STATES, json=body)
    assert answer.status_code == 400
    assert answer.json() == {"statusCode": 400, "message": message, "error": "Bad Request"}
    assert app_client.get("/_emulator/history", params={"userId": "u"}, headers=PRIVATE).json()["data"] == []


def test_a_body_that_is_not_json_gets_400(app_client: httpx.Client) -> None:
    for content in (b"{not json", b'{"userId": "u", "flowSlug": "flow_onboarding", "data": {"x": NaN}}'):
        answer = app_client.post(STATES, content=content, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400
        assert answer.json()["message"] == "body must be a JSON object"


def test_get_flow_states_needs_a_user(app_client: httpx.Client) -> None:
    answer = app_client.get(STATES)
    assert answer.status_code == 400
    assert answer.json() == {
        "statusCode": 400,
        "message": "userId should not be empty",
        "error": "Bad Request",
    }


@pytest.mark.parametrize("created_at", ["2024-01-01T00:00:00Z", "2024-01-01T02:00:00.123+02:00", "2024-01-01"])
def test_iso_dates_are_accepted_and_kept_as_given(app_client: httpx.Client, created_at: str) -> None:
    answer = app_client.post(STATES, json=_w(actionType="STARTED_FLOW", createdAt=created_at))
    assert answer.status_code == 201
    flow = UserFlowStates.model_validate(answer.json()).flow(FLOW)
    assert flow is not None
    assert flow.state.last_action_at == created_at


def test_the_read_form_changes_nothing(app_client: httpx.Client) -> None:
    app_client.post(STATES, json=_w(actionType="COMPLETED_STEP", stepId=STEPS[0]))
    before = app_client.get(STATES, params={"userId": "u"}).json()
    answer = app_client.post(STATES, json={"userId": "u", "groupId": "g"})
    assert answer.status_code == 201
    assert answer.json() == before
    history = app_client.get("/_emulator/history", params={"userId": "u"}, headers=PRIVATE).json()["data"]
    assert len(history) == 1
    stats = app_client.get("/_emulator/stats", headers=PRIVATE).json()
    assert (stats["reads"], stats["writes_accepted"]) == (2, 1)


def test_data_and_group_are_recorded_and_returned_as_flow_responses(app_client: httpx.Client) -> None:
    body = _w(
        actionType="COMPLETED_STEP",
        stepId=STEPS[1],
        groupId="acme",
        data={"answer": 42},
        createdAt="2024-01-01T00:00:00Z",
    )
    assert app_client.post(STATES, json=body).status_code == 201
    entry = app_client.get("/_emulator/history", params={"userId": "u"}, headers=PRIVATE).json()["data"][0]
    assert entry["groupId"] == "acme"
    assert entry["data"] == {"answer": 42}
    assert entry["changed"] is True
    assert entry["createdAt"] == "2024-01-01T00:00:00Z"
    assert entry["receivedAt"].endswith("Z")

    flow = app_client.get(STATES, params={"userId": "u"}, headers=PRIVATE).json()["eligibleFlows"][0]
    response = {
        "flowSlug": FLOW,
        "stepId": STEPS[1],
        "actionType": "COMPLETED_STEP",
        "data": '{"answer":42}',
        "createdAt": "2024-01-01T00:00:00Z",
    }
    assert flow["$state"]["flowResponses"] == [response]
    assert flow["data"]["steps"][1]["$state"]["flowResponses"] == [response]
    assert flow["data"]["steps"][0]["$state"]["flowResponses"] == []


def test_flows_list_every_flow_with_its_status_and_steps(app_client: httpx.Client) -> None:
    answer = app_client.get("/v1/public/flows")
    assert answer.status_code == 200
    listing = FlowList.model_validate(answer.json())
    assert [(f.slug, f.status) for f in listing.data] == [
        ("flow_onboarding", "ACTIVE"),
        ("flow_welcome_tour", "ACTIVE"),
        ("flow_announcement", "ACTIVE"),
        ("flow_legacy_survey", "ARCHIVED"),
    ]
    assert (listing.offset, listing.limit) == (0, 100)
    assert catalog_from_api(listing.data) == sample_catalog()  # the client reads back the same catalog

    page = app_client.get("/v1/public/flows", params={"offset": 1, "limit": 2}).json()
    assert [f["slug"] for f in page["data"]] == ["flow_welcome_tour", "flow_announcement"]


def test_one_flow_or_404(app_client: httpx.Client) -> None:
    assert app_client.get(f"/v1/public/flows/{FLOW}").json()["slug"] == FLOW
    missing = app_client.get("/v1/public/flows/flow_nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "statusCode": 404,
        "message": "flow 'flow_nope' not found",
        "error": "Not Found",
    }


def test_users_lookup_needs_the_private_key_and_gives_the_slug(app_client: httpx.Client) -> None:
    assert app_client.get("/v1/users", params={"userId": "u"}).status_code == 403
    missing = app_client.get("/v1/users", params={"userId": "u"}, headers=PRIVATE)
    assert missing.status_code == 404
    assert missing.json()["error"] == "Not Found"
    app_client.post(STATES, json=_w(actionType="STARTED_FLOW"))
    user = app_client.get("/v1/users", params={"userId": "u"}, headers=PRIVATE).json()
    assert user["userId"] == "u"
    assert user["slug"].startswith("user_")
    assert user["firstSeenMonth"] == datetime.now(UTC).strftime("%Y-%m")


def test_delete_resets_one_flow_and_answers_200_even_when_nothing_is_there(app_client: httpx.Client) -> None:
    app_client.post(STATES, json=_w(actionType="COMPLETED_STEP", stepId=STEPS[0]))
    app_client.post(STATES, json=_w(flowSlug="flow_announcement", actionType="COMPLETED_FLOW"))
    slug = app_client.get("/v1/users", params={"userId": "u"}, headers=PRIVATE).json()["slug"]
    assert app_client.delete(f"/v1/userFlowStates/{FLOW}/{slug}").status_code == 403  # public key

    answer = app_client.delete(f"/v1/userFlowStates/{FLOW}/{slug}", headers=PRIVATE)
    assert answer.status_code == 200
    raw = app_client.get(STATES, params={"userId": "u"}, headers=PRIVATE).json()
    states = UserFlowStates.model_validate(raw)
    onboarding, announcement = states.flow(FLOW), states.flow("flow_announcement")
    assert onboarding is not None
    assert announcement is not None
    assert not onboarding.state.started
    assert onboarding.state.current_step_index == -1
    assert next(f for f in raw["eligibleFlows"] if f["flowSlug"] == FLOW)["$state"]["flowResponses"] == []
    assert announcement.state.completed  # other flows untouched

    for path in (f"/v1/userFlowStates/{FLOW}/user_nobody", f"/v1/userFlowStates/flow_nope/{slug}"):
        assert app_client.delete(path, headers=PRIVATE).status_code == 200


def test_unknown_paths_and_methods_use_the_error_shape(app_client: httpx.Client) -> None:
    missing = app_client.get("/v1/public/nothing")
    assert missing.status_code == 404
    assert missing.json() == {
        "statusCode": 404,
        "message": "Cannot GET /v1/public/nothing",
        "error": "Not Found",
    }
    wrong = app_client.put(STATES)
    assert wrong.status_code == 405
    assert wrong.json()["statusCode"] == 405


def test_the_openapi_document_describes_every_route(app_client: httpx.Client) -> None:
    doc = app_client.get("/openapi.json", headers={}).json()
    assert doc["openapi"].startswith("3.")
    served: dict[str, set[str]] = {}
    for route in create_app(EmulatorConfig(catalog=sample_catalog())).routes:
        assert isinstance(route, Route)
        served.setdefault(route.path, set()).update(m.lower() for m in (route.methods or ()) if m != "HEAD")
    assert {path: set(ops) for path, ops in doc["paths"].items()} == served
    assert doc["components"]["schemas"]["FlowStateWrite"]["properties"]["actionType"]["enum"] == [
        a.value for a in Action
    ]


def test_healthz_needs_no_key(app_client: httpx.Client) -> None:
    answer = app_client.get("/healthz", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"


def test_stats_count_requests_by_status(app_client: httpx.Client) -> None:
    app_client.post(STATES, json=_w(actionType="STARTED_FLOW"))
    app_client.post(STATES, json=_w(actionType="STARTED_FLOW"))
    app_client.post(STATES, json={"userId": ""})
    app_client.get(STATES, params={"userId": "u"}, headers={"Authorization": "Bearer nope"})
    stats = app_client.get("/_emulator/stats", headers=PRIVATE).json()
    assert stats["requests_by_status"] == {"201": 2, "400": 1, "403": 1}
    assert stats["requests_total"] == 4
    assert (stats["writes_accepted"], stats["writes_unchanged"]) == (2, 1)
    assert stats["distinct_users"] == stats["monthly_active_users"] == 1
    assert stats["faults_injected"] == dict.fromkeys(FAULT_KINDS, 0)
    assert stats["max_requests_per_second_window"] >= 1
    expected_keys = {
        "requests_total", "requests_by_status", "writes_accepted", "writes_unchanged", "reads", "throttled",
        "max_requests_per_second_window", "distinct_users", "monthly_active_users", "mau_capped",
        "faults_injected", "history_rows", "uptime_s",
    }  # fmt: skip
    assert set(stats) == expected_keys

    assert app_client.post("/_emulator/reset", headers=PRIVATE).status_code == 200
    cleared = app_client.get("/_emulator/stats", headers=PRIVATE).json()
    assert cleared["requests_total"] == 0
    assert cleared["distinct_users"] == 0
    assert cleared["history_rows"] == 0


def test_the_mau_cap_is_per_calendar_month(tmp_path: Path) -> None:
    now = [datetime(2024, 1, 31, 23, 0, tzinfo=UTC)]
    config = EmulatorConfig(catalog=sample_catalog(), db_path=tmp_path / "m.db", mau_cap=1, clock=lambda: now[0])
    with in_process_client(create_app(config), PUBLIC) as client:
        assert client.post(STATES, json=_w(actionType="STARTED_FLOW")).status_code == 201
        refused = client.post(STATES, json={**_w(actionType="STARTED_FLOW"), "userId": "v"})
        assert refused.status_code == 429
        assert refused.json()["message"] == MAU_CAP_MESSAGE
        now[0] = datetime(2024, 2, 1, 0, 0, tzinfo=UTC)
        assert client.post(STATES, json={**_w(actionType="STARTED_FLOW"), "userId": "v"}).status_code == 201
        assert client.post(STATES, json=_w(actionType="STARTED_FLOW")).status_code == 429  # u is new in February


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"public_key": "k", "private_key": "k"}, "must differ"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"fault_rate": 1.5}, "fault_rate"),
        ({"fault_kinds": ("explode",)}, "fault_kinds"),
        ({"latency_ms": -1.0}, "latency"),
    ],
)
def test_the_config_refuses_nonsense(tmp_path: Path, changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EmulatorConfig(catalog=sample_catalog(), db_path=tmp_path / "x.db", **changes)


def test_the_config_repr_hides_the_keys(tmp_path: Path) -> None:
    config = EmulatorConfig(
        catalog=sample_catalog(), db_path=tmp_path / "x.db", public_key="pk_secret", private_key="sk_secret"
    )
    assert "secret" not in repr(config)
