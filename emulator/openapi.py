"""The OpenAPI document the emulator publishes at ``GET /openapi.json`` (written by hand: the app has no
schema machinery, and the document is the readable contract of what it serves)."""

from __future__ import annotations

from typing import Any

from frigade.rules import Action

_ACTIONS = [a.value for a in Action]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "validation failed; message is a list when several fields fail",
        403: "missing, unknown or wrong-kind key",
        404: "not found",
        429: "throttled (with Retry-After) or the monthly-active-user cap is used up (no Retry-After)",
        500: "internal error, or an injected fault",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _query(name: str, required: bool, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": {"type": "string"},
        "description": description,
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_PUBLIC: list[dict[str, list[str]]] = [{"bearer": []}]

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["statusCode", "message"],
        "properties": {
            "statusCode": {"type": "integer"},
            "message": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "error": {"type": "string"},
        },
    },
    "FlowStateWrite": {
        "type": "object",
        "required": ["userId"],
        "description": "With only userId (and optional groupId) the request is a read and changes nothing.",
        "properties": {
            "userId": {"type": "string", "minLength": 1},
            "flowSlug": {"type": "string", "description": "an ACTIVE flow of the catalog"},
            "actionType": {"type": "string", "enum": _ACTIONS},
            "stepId": {"type": "string", "description": "required for *_STEP actions, forbidden for *_FLOW"},
            "groupId": {"type": "string", "description": "recorded in history; state is kept per user"},
            "data": {"type": "object", "additionalProperties": True},
            "createdAt": {
                "type": "string",
                "format": "date-time",
                "description": "ISO-8601, stored and returned (lastActionAt) exactly as given; "
                "default: the server's time",
            },
        },
    },
    "FlowResponse": {
        "type": "object",
        "properties": {
            "flowSlug": {"type": "string"},
            "stepId": {"type": ["string", "null"]},
            "actionType": {"type": "string", "enum": _ACTIONS},
            "data": {"type": "string", "description": "the write's data object as a JSON string"},
            "createdAt": {"type": "string"},
        },
    },
    "StepState": {
        "type": "object",
        "properties": {
            "completed": {"type": "boolean"},
            "skipped": {"type": "boolean"},
            "started": {"type": "boolean"},
            "visible": {"type": "boolean"},
            "blocked": {"type": "boolean"},
            "lastActionAt": {"type": ["string", "null"]},
            "flowResponses": {
                "type": "array",
                "items": _ref("FlowResponse"),
                "description": "private key only",
            },
        },
    },
    "FlowState": {
        "type": "object",
        "properties": {
            "currentStepId": {"type": ["string", "null"]},
            "currentStepIndex": {"type": "integer", "description": "-1 while the flow is not started"},
            "completed": {"type": "boolean"},
            "started": {"type": "boolean"},
            "skipped": {"type": "boolean"},
            "visible": {"type": "boolean"},
            "lastActionAt": {"type": ["string", "null"]},
            "flowResponses": {
                "type": "array",
                "items": _ref("FlowResponse"),
                "description": "private key only",
            },
        },
    },
    "StatefulFlow": {
        "type": "object",
        "properties": {
            "flowSlug": {"type": "string"},
            "flowName": {"type": "string"},
            "flowType": {"type": "string"},
            "version": {"type": "integer"},
            "data": {
                "type": "object",
                "properties": {
                    "steps": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "$state": _ref("StepState")},
                            "additionalProperties": True,
                        },
                    }
                },
            },
            "$state": _ref("FlowState"),
        },
    },
    "UserFlowStates": {
        "type": "object",
        "properties": {
            "eligibleFlows": {"type": "array", "items": _ref("StatefulFlow")},
            "ineligibleFlows": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ExternalizedFlow": {
        "type": "object",
        "properties": {
            "slug": {"type": "string"},
            "name": {"type": "string"},
            "type": {"type": "string"},
            "version": {"type": "integer"},
            "status": {"type": "string", "enum": ["ACTIVE", "ARCHIVED", "DRAFT"]},
            "data": {"type": "string", "description": "the flow config (with its ordered steps) as JSON"},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    flow_states = _json(_ref("UserFlowStates"), "every ACTIVE flow for the user, recomputed")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Frigade flow-state API emulator",
            "version": "1",
            "description": "A local stand-in for Frigade's flow-state API (see README, 'Rules profiles'). "
            "Keys: public keys work on /v1/public/*, private keys everywhere and add flowResponses.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "security": _PUBLIC,
        "paths": {
            "/v1/public/flowStates": {
                "post": {
                    "summary": "Apply one action (write form) or read the user's state (read form)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("FlowStateWrite")}},
                    },
                    "responses": {"201": flow_states, **_errors(400, 403, 429, 500)},
                },
                "get": {
                    "summary": "Read the user's state",
                    "parameters": [_query("userId", True, "the user"), _query("groupId", False, "the group")],
                    "responses": {"200": flow_states, **_errors(400, 403, 429)},
                },
            },
            "/v1/public/flows": {
                "get": {
                    "summary": "The catalog, every status included",
                    "parameters": [
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "default": 100},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "data": {"type": "array", "items": _ref("ExternalizedFlow")},
                                    "offset": {"type": "integer"},
                                    "limit": {"type": "integer"},
                                },
                            },
                            "flows",
                        ),
                        **_errors(403),
                    },
                }
            },
            "/v1/public/flows/{slug}": {
                "get": {
                    "summary": "One flow",
                    "parameters": [_path("slug")],
                    "responses": {"200": _json(_ref("ExternalizedFlow"), "the flow"), **_errors(403, 404)},
                }
            },
            "/v1/users": {
                "get": {
                    "summary": "A user (private key)",
                    "parameters": [_query("userId", True, "the user")],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "userId": {"type": "string"},
                                    "slug": {"type": "string"},
                                    "firstSeenMonth": {"type": "string"},
                                    "createdAt": {"type": "string"},
                                },
                            },
                            "the user",
                        ),
                        **_errors(400, 403, 404),
                    },
                }
            },
            "/v1/userFlowStates/{flowSlug}/{userSlug}": {
                "delete": {
                    "summary": "Reset one user's flow (private key); 200 even when nothing was there",
                    "parameters": [_path("flowSlug"), _path("userSlug")],
                    "responses": {"200": _json({"type": "object"}, "done"), **_errors(403)},
                }
            },
            "/_emulator/stats": {
                "get": {
                    "summary": "Counters (private key)",
                    "responses": {"200": _json({"type": "object"}, "stats")},
                }
            },
            "/_emulator/reset": {
                "post": {
                    "summary": "Clear state, history and stats (private key)",
                    "responses": {"200": _json({"type": "object"}, "cleared")},
                }
            },
            "/_emulator/history": {
                "get": {
                    "summary": "A user's accepted writes in order (private key)",
                    "parameters": [_query("userId", True, "the user")],
                    "responses": {"200": _json({"type": "object"}, "history")},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Readiness (no key)",
                    "security": [],
                    "responses": {"200": {"description": "ok"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document (no key)",
                    "security": [],
                    "responses": {"200": {"description": "ok"}},
                }
            },
        },
    }
