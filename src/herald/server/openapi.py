"""The OpenAPI 3.1 document, generated from the msgspec request types.

Request schemas come from the same msgspec Structs that validate requests (so the document
cannot drift from the validator); response schemas are declared here once.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from herald import __version__, limits
from herald.channels.webpush import URL_MAX
from herald.core.delivery import DeliveryState
from herald.core.messages import DeviceRequest, PublishRequest, SubscriberTokenRequest
from herald.core.templates import TemplateSpec
from herald.server.admin_api import (
    AppRequest,
    KeyRequest,
    LoginRequest,
    ScopesRequest,
    TenantRequest,
)
from herald.server.recipients import WebPushRequest
from herald.server.templates import PreviewRequest
from herald.service.recipients import RecipientRequest

__all__ = ["openapi_document", "openapi_json"]

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


_AUDIT = {
    "type": "object",
    "required": ["index", "leaf_hash"],
    "properties": {"index": {"type": "integer"}, "leaf_hash": {"type": "string"}},
}
_MESSAGE_VIEW = {
    "type": "object",
    "required": ["id", "topic", "priority", "ttl", "created_at", "expires_at", "audit"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "topic": {"type": "string"},
        "title": {"type": ["string", "null"]},
        "body": {"type": ["string", "null"]},
        "data": {"type": ["object", "null"]},
        "priority": {"type": "string"},
        "ttl": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "recipients": {"type": "array", "items": {"type": "string"}},
        "category": {"type": "string"},
        "template": {"type": "object", "description": "the template reference it rendered"},
        "state": {
            "type": "string",
            "enum": ["scheduled", "cancelled"],
            "description": "only while scheduled (or once cancelled): not published yet",
        },
        "deliver_at": {"type": "string", "format": "date-time"},
        "e2e": {"type": "object", "description": "end-to-end content: per-device HPKE payloads"},
        "audit": _ref("AuditRef"),
        "deliveries": {"type": "array", "items": _ref("Delivery")},
    },
}
_RESPONSES: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
    },
    "AuditRef": _AUDIT,
    "Published": {
        "type": "object",
        "required": ["id", "topic", "audit"],
        "properties": {
            "id": {"type": "string"},
            "topic": {"type": "string"},
            "scheduled": {"type": "boolean"},
            "deliver_at": {"type": "string", "format": "date-time"},
            "audit": _ref("AuditRef"),
        },
    },
    "Template": {
        "type": "object",
        "required": ["name", "version", "default_locale", "variants"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "created_by": {"type": "string"},
            "default_locale": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "variants": {"type": "array", "items": {"type": "object"}},
        },
    },
    "TemplateList": {"type": "object", "properties": {"templates": {"type": "array"}}},
    "Rendered": {
        "type": "object",
        "properties": {
            name: {"type": ["string", "null"]}
            for name in ("channel", "locale", "title", "body", "html")
        },
    },
    "Recipient": {
        "type": "object",
        "required": ["recipient", "endpoints", "preferences"],
        "properties": {
            "recipient": {"type": "string"},
            "endpoints": {"type": "array", "items": {"type": "object"}},
            "preferences": {"type": "object"},
        },
    },
    "DeliveryList": {
        "type": "object",
        "required": ["deliveries", "next"],
        "properties": {
            "deliveries": {"type": "array", "items": _ref("Delivery")},
            "next": {"type": ["string", "null"]},
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "oneOf": [
                        _ref("Published"),
                        {
                            "type": "object",
                            "required": ["error"],
                            "properties": {"error": _ref("Problem")},
                        },
                    ]
                },
            }
        },
    },
    "Delivery": {
        "type": "object",
        "required": ["id", "channel", "endpoint", "state", "attempts"],
        "properties": {
            "id": {"type": "string"},
            "channel": {"type": "string"},
            "endpoint": {"type": "string"},
            "message_id": {"type": "string"},
            "recipient": {"type": ["string", "null"]},
            "state": {"type": "string", "enum": [state.value for state in DeliveryState]},
            "step": {"type": "integer", "description": "fallback step (0: at once)"},
            "attempts": {"type": "integer"},
            "last_error": {"type": ["string", "null"]},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "MessageView": _MESSAGE_VIEW,
    "Device": {
        "type": "object",
        "required": ["device_id", "recipient", "public_key", "created_at"],
        "properties": {
            "device_id": {"type": "string"},
            "recipient": {"type": "string"},
            "public_key": {"type": "string"},
            "label": {"type": ["string", "null"]},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "DeviceList": {
        "type": "object",
        "required": ["devices"],
        "properties": {"devices": {"type": "array", "items": _ref("Device")}},
    },
    "History": {
        "type": "object",
        "required": ["messages", "next"],
        "properties": {
            "messages": {"type": "array", "items": _ref("MessageView")},
            "next": {"type": ["string", "null"]},
        },
    },
    "TokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"type": "string", "const": "Bearer"},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
        },
    },
    "SubscriberToken": {
        "type": "object",
        "required": ["token", "expires_in", "recipient", "topics"],
        "properties": {
            "token": {"type": "string"},
            "expires_in": {"type": "integer"},
            "recipient": {"type": "string"},
            "topics": {"type": "array", "items": {"type": "string"}},
        },
    },
    "StreamTicket": {
        "type": "object",
        "required": ["ticket", "expires_in"],
        "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer"}},
    },
    "Batch": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": _ref("PublishRequest"),
            }
        },
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_COMMON = {
    "400": _problem("invalid request"),
    "401": _problem("invalid or missing token"),
    "403": _problem("scope does not allow this"),
    "503": _problem("database unavailable"),
}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _param(name: str, where: str = "path", **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema or {"type": "string"},
    }


def _op(op_id: str, summary: str, security: Any, ok: tuple[str, str, str], **more: Any) -> Any:
    status, schema, description = ok
    responses = {status: _json(schema, description), **more.pop("responses", {}), **_COMMON}
    return {
        "summary": summary,
        "operationId": op_id,
        "security": security,
        **more,
        "responses": responses,
    }


def _plan_paths(bearer: Any) -> dict[str, Any]:
    """Scheduled-message cancel, templates, recipients and deliveries."""
    not_found = {"404": _problem("not found")}
    return {
        "/v1/messages/{message_id}:cancel": {
            "parameters": [_param("message_id")],
            "post": _op(
                "cancelMessage",
                "Cancel a scheduled message until it is due (signed)",
                bearer,
                ("200", "MessageView", "cancelled"),
                responses={**not_found, "409": _problem("published or cancelled already")},
            ),
        },
        "/v1/templates": {
            "get": _op(
                "listTemplates",
                "Newest version of each template",
                bearer,
                ("200", "TemplateList", "the templates"),
            )
        },
        "/v1/templates/{name}": {
            "parameters": [_param("name")],
            "put": _op(
                "putTemplate",
                "Save a new template version (admin, signed)",
                bearer,
                ("201", "Template", "the stored version"),
                requestBody=_body("TemplateSpec"),
                responses={"422": _problem("refused: outside the sandbox, or invalid")},
            ),
            "get": _op(
                "getTemplate",
                "A template version (newest by default)",
                bearer,
                ("200", "Template", "the version"),
                parameters=[_param("version", "query", type="integer", minimum=1)],
                responses=not_found,
            ),
        },
        "/v1/templates/{name}:render": {
            "parameters": [_param("name")],
            "post": _op(
                "previewTemplate",
                "Render one variant with sample variables",
                bearer,
                ("200", "Rendered", "the rendering"),
                requestBody=_body("PreviewRequest"),
                responses={"422": _problem("does not render with these variables")},
            ),
        },
        "/v1/recipients/{recipient}": {
            "parameters": [_param("recipient")],
            "put": _op(
                "putRecipient",
                "Replace a recipient's endpoints and preferences (admin, signed)",
                bearer,
                ("200", "Recipient", "the recipient, secrets redacted"),
                requestBody=_body("RecipientRequest"),
            ),
            "get": _op(
                "getRecipient",
                "A recipient, secrets redacted",
                bearer,
                ("200", "Recipient", "the recipient"),
                responses=not_found,
            ),
        },
        "/v1/deliveries": {
            "get": _op(
                "listDeliveries",
                "Deliveries, e.g. dead letters (?state=dead)",
                bearer,
                ("200", "DeliveryList", "a page"),
                parameters=[
                    _param(
                        "state",
                        "query",
                        type="string",
                        enum=[state.value for state in DeliveryState],
                    ),
                    _param("limit", "query", type="integer", minimum=1, maximum=1000),
                    _param("after", "query"),
                ],
            )
        },
        "/v1/deliveries/{delivery_id}:retry": {
            "parameters": [_param("delivery_id")],
            "post": _op(
                "retryDelivery",
                "Make a dead delivery due again (admin, signed)",
                bearer,
                ("202", "Delivery", "due again"),
                responses={**not_found, "409": _problem("its endpoint is gone")},
            ),
        },
    }


_TENANT = {
    "type": "object",
    "required": ["id", "name", "created_at", "shredded"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "shredded": {"type": "boolean"},
    },
}
_APP = {
    "type": "object",
    "required": ["client_id", "tenant", "name", "scopes", "disabled", "created_at"],
    "properties": {
        "client_id": {"type": "string"},
        "tenant": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "string", "description": "space-separated (RFC 6749 §3.3)"},
        "disabled": {"type": "boolean"},
        "require_bound_tokens": {
            "type": "boolean",
            "description": "tokens only over mutual TLS, bound to the certificate (RFC 8705)",
        },
        "created_at": {"type": "string", "format": "date-time"},
        "client_secret": {"type": "string", "description": "only when created, shown once"},
    },
}


def _metadata_view(deliveries: dict[str, Any]) -> dict[str, Any]:
    """What operators see of a message: its metadata (never its content) and deliveries."""
    return {
        "type": "object",
        "required": [
            "id",
            "topic",
            "app_id",
            "priority",
            "ttl",
            "created_at",
            "expires_at",
            "recipients",
            "category",
            "audit",
            "deliveries",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "topic": {"type": "string"},
            "app_id": {"type": "string"},
            "priority": {"type": "string"},
            "ttl": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"},
            "recipients": {"type": "array", "items": {"type": "string"}},
            "category": {"type": ["string", "null"]},
            "audit": _ref("AuditRef"),
            "deliveries": deliveries,
        },
    }


_ADMIN_RESPONSES: dict[str, Any] = {
    "OperatorToken": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "operator"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"type": "string", "const": "Bearer"},
            "expires_in": {"type": "integer"},
            "operator": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "tenant": {"type": ["string", "null"]},
                    "role": {"type": "string", "enum": ["global", "tenant"]},
                },
            },
        },
    },
    "Tenant": _TENANT,
    "TenantList": {
        "type": "object",
        "properties": {"tenants": {"type": "array", "items": _ref("Tenant")}},
    },
    "App": _APP,
    "AppList": {"type": "object", "properties": {"apps": {"type": "array", "items": _ref("App")}}},
    "AppSecret": {
        "type": "object",
        "required": ["client_id", "client_secret"],
        "properties": {"client_id": {"type": "string"}, "client_secret": {"type": "string"}},
    },
    "Empty": {"type": "object"},
    "AppKey": {
        "type": "object",
        "required": ["keyid", "client_id", "algorithm", "created_at", "revoked_at"],
        "properties": {
            "keyid": {"type": "string"},
            "client_id": {"type": "string"},
            "algorithm": {"type": "string", "enum": ["ed25519", "hmac-sha256"]},
            "created_at": {"type": "string", "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
            "secret": {
                "type": "string",
                "description": "base64 HMAC secret: only when an HMAC key is created, shown once",
            },
        },
    },
    "AppKeyList": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": _ref("AppKey")}},
    },
    "DataKey": {
        "type": "object",
        "required": ["tenant", "version", "versions", "reencryption"],
        "properties": {
            "tenant": {"type": "string"},
            "version": {"type": ["integer", "null"], "description": "the current version"},
            "versions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["version", "created_at"],
                    "properties": {
                        "version": {"type": "integer"},
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
            },
            "reencryption": {
                "description": "the latest re-encryption (null: none yet)",
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": [
                            "target",
                            "done",
                            "total",
                            "running",
                            "started_at",
                            "finished_at",
                        ],
                        "properties": {
                            "target": {"type": "integer"},
                            "done": {"type": "integer"},
                            "total": {"type": "integer"},
                            "running": {"type": "boolean", "description": "on this node"},
                            "started_at": {"type": "string", "format": "date-time"},
                            "finished_at": {"type": ["string", "null"], "format": "date-time"},
                        },
                    },
                ],
            },
        },
    },
    "Overview": {
        "type": "object",
        "required": [
            "window",
            "bucket",
            "start",
            "series",
            "deliveries",
            "dead_letters",
            "streams",
            "nodes",
        ],
        "properties": {
            "window": {"type": "integer", "description": "seconds"},
            "bucket": {"type": "integer", "description": "seconds per point of the series"},
            "start": {"type": "string", "format": "date-time", "description": "first bucket"},
            "series": {
                "type": "object",
                "required": ["published", "delivered", "failed"],
                "properties": {
                    name: {"type": "array", "items": {"type": "integer"}}
                    for name in ("published", "delivered", "failed")
                },
            },
            "deliveries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["channel", "state", "count"],
                    "properties": {
                        "channel": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": [state.value for state in DeliveryState],
                        },
                        "count": {"type": "integer"},
                    },
                },
            },
            "dead_letters": {"type": "integer"},
            "streams": {"type": "integer", "description": "live streams held by this node"},
            "nodes": {"type": "null", "description": "reserved (herald cluster status)"},
        },
    },
    "MessageSummary": _metadata_view(
        {
            "type": "object",
            "description": "how many of its deliveries are in each state",
            "additionalProperties": {"type": "integer"},
        }
    ),
    "MessageSearch": {
        "type": "object",
        "required": ["messages", "next"],
        "properties": {
            "messages": {"type": "array", "items": _ref("MessageSummary")},
            "next": {"type": ["string", "null"], "description": "the before of the next page"},
        },
    },
    "MessageMetadata": _metadata_view({"type": "array", "items": _ref("Delivery")}),
    "WebPushEndpoint": {
        "type": "object",
        "required": ["endpoint_id"],
        "properties": {"endpoint_id": {"type": "string"}},
    },
}


def _admin_paths() -> dict[str, Any]:
    """The operator API: sign-in, tenants, apps (operator tokens, never app tokens)."""
    operator: list[dict[str, list[str]]] = [{"operator": []}]
    not_found = {"404": _problem("not found, or not this operator's")}
    app_path = "/v1/admin/apps/{client_id}"
    app_ops = {
        ":disable": ("disableApp", "Disable an app: its live tokens die", "App"),
        ":enable": ("enableApp", "Enable a disabled app", "App"),
        ":rotate-secret": ("rotateAppSecret", "A new client secret (shown once)", "AppSecret"),
    }
    paths: dict[str, Any] = {
        "/v1/admin/login": {
            "post": {
                "summary": "Operator sign-in: name + password → a short-lived operator token",
                "operationId": "adminLogin",
                "security": [],
                "requestBody": _body("LoginRequest"),
                "responses": {
                    "200": _json("OperatorToken", "an operator token"),
                    "400": _problem("invalid request"),
                    "401": _problem("wrong name or password, or disabled"),
                    "429": _problem("locked out after repeated failures"),
                },
            }
        },
        "/v1/admin/logout": {
            "post": _op(
                "adminLogout", "Revoke this operator token", operator, ("200", "Empty", "revoked")
            )
        },
        "/v1/admin/tenants": {
            "get": _op(
                "listTenants",
                "Tenants this operator administers",
                operator,
                ("200", "TenantList", "the tenants"),
            ),
            "post": _op(
                "createTenant",
                "Create a tenant (global operators)",
                operator,
                ("201", "Tenant", "created"),
                requestBody=_body("TenantRequest"),
                responses={"409": _problem("a tenant of that name exists")},
            ),
        },
        "/v1/admin/tenants/{tenant}/apps": {
            "parameters": [_param("tenant")],
            "get": _op(
                "listApps",
                "The apps of a tenant",
                operator,
                ("200", "AppList", "the apps"),
                responses=not_found,
            ),
            "post": _op(
                "createApp",
                "Create an app (its client secret is shown once)",
                operator,
                ("201", "App", "created"),
                requestBody=_body("AppRequest"),
                responses=not_found,
            ),
        },
    }
    for suffix, (op_id, summary, schema) in app_ops.items():
        paths[app_path + suffix] = {
            "parameters": [_param("client_id")],
            "post": _op(op_id, summary, operator, ("200", schema, "done"), responses=not_found),
        }
    paths |= {
        app_path + "/scopes": {
            "parameters": [_param("client_id")],
            "put": _op(
                "setAppScopes",
                "Replace an app's scopes: its live tokens die",
                operator,
                ("200", "App", "the app with its new scopes"),
                requestBody=_body("ScopesRequest"),
                responses=not_found,
            ),
        },
        app_path + "/keys": {
            "parameters": [_param("client_id")],
            "get": _op(
                "listAppKeys",
                "An app's request-signing keys, revoked ones too",
                operator,
                ("200", "AppKeyList", "the keys"),
                responses=not_found,
            ),
            "post": _op(
                "addAppKey",
                "Register an Ed25519 public key (PEM), or create an HMAC key (secret shown once)",
                operator,
                ("201", "AppKey", "the new key"),
                requestBody=_body("KeyRequest"),
                responses=not_found,
            ),
        },
        app_path + "/keys/{keyid}:revoke": {
            "parameters": [_param("client_id"), _param("keyid")],
            "post": _op(
                "revokeAppKey",
                "Revoke a request-signing key of an app (again: the first revocation stays)",
                operator,
                ("200", "AppKey", "the revoked key"),
                responses=not_found,
            ),
        },
        "/v1/admin/tenants/{tenant}/data-key": {
            "parameters": [_param("tenant")],
            "get": _op(
                "getDataKey",
                "A tenant's data-key versions and the progress of its latest re-encryption",
                operator,
                ("200", "DataKey", "the data key"),
                responses=not_found,
            ),
        },
        "/v1/admin/tenants/{tenant}/data-key:rotate": {
            "parameters": [_param("tenant")],
            "post": _op(
                "rotateDataKey",
                "A new data-key version; the tenant's content is re-encrypted in the background",
                operator,
                ("202", "DataKey", "rotated; re-encryption started"),
                responses={
                    **not_found,
                    "409": _problem("a re-encryption of this tenant is still running"),
                },
            ),
        },
    }
    return paths | _monitor_paths(operator, not_found)


def _monitor_paths(operator: Any, not_found: dict[str, Any]) -> dict[str, Any]:
    """What operators watch per tenant: activity, message metadata, deliveries, retries."""
    base = "/v1/admin/tenants/{tenant}"
    states = [state.value for state in DeliveryState]
    since_until = {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339, with an offset",
    }
    return {
        base + "/overview": {
            "parameters": [_param("tenant")],
            "get": _op(
                "tenantOverview",
                "Activity over time, deliveries by channel and state, streams, dead letters",
                operator,
                ("200", "Overview", "the overview"),
                parameters=[
                    _param("window", "query", type="integer", minimum=10, maximum=86_400 * 360),
                    _param("bucket", "query", type="integer", minimum=10, maximum=86_400),
                ],
                description=(
                    "window (default 3600 s) must be from one bucket (default 60 s) to 360 "
                    "buckets; otherwise 400."
                ),
                responses=not_found,
            ),
        },
        base + "/messages": {
            "parameters": [_param("tenant")],
            "get": _op(
                "searchMessages",
                "Message metadata, newest first (operators never see content)",
                operator,
                ("200", "MessageSearch", "a page"),
                parameters=[
                    _param(
                        "topic",
                        "query",
                        type="string",
                        description="a topic, or a prefix ending in .> (orders.>)",
                    ),
                    _param("recipient", "query"),
                    _param("state", "query", type="string", enum=states),
                    _param("since", "query", **since_until),
                    _param("until", "query", **since_until),
                    _param("before", "query", type="string", pattern="^[0-9]{1,18}$"),
                    _param("limit", "query", type="integer", minimum=1, maximum=1000),
                ],
                responses=not_found,
            ),
        },
        base + "/messages/{message_id}": {
            "parameters": [_param("tenant"), _param("message_id")],
            "get": _op(
                "getMessageMetadata",
                "A message's metadata and every delivery with its attempts and last error",
                operator,
                ("200", "MessageMetadata", "the message"),
                responses=not_found,
            ),
        },
        base + "/deliveries": {
            "parameters": [_param("tenant")],
            "get": _op(
                "listTenantDeliveries",
                "A tenant's deliveries, e.g. dead letters (?state=dead)",
                operator,
                ("200", "DeliveryList", "a page"),
                parameters=[
                    _param("state", "query", type="string", enum=states),
                    _param("limit", "query", type="integer", minimum=1, maximum=1000),
                    _param("after", "query"),
                ],
                responses=not_found,
            ),
        },
        base + "/deliveries/{delivery_id}:retry": {
            "parameters": [_param("tenant"), _param("delivery_id")],
            "post": _op(
                "retryTenantDelivery",
                "Make a dead or failed delivery due again (audited, naming the operator)",
                operator,
                ("202", "Delivery", "due again"),
                responses={**not_found, "409": _problem("its endpoint is gone or disabled")},
            ),
        },
    }


def _audit_paths(readers: Any) -> dict[str, Any]:
    """The audit log routes (docs/audit.md), the audit verifier key and the VAPID key."""
    obj = {"type": "object"}

    def read(op_id: str, summary: str, params: list[Any], **more: Any) -> dict[str, Any]:
        ok = {"description": "the answer", "content": {"application/json": {"schema": obj}}}
        return {
            "get": {
                "summary": summary,
                "operationId": op_id,
                "security": readers,
                "parameters": params,
                "responses": {"200": ok, **more, **_COMMON},
            }
        }

    def num(name: str, required: bool = False) -> dict[str, Any]:
        return {**_param(name, "query", type="integer", minimum=0), "required": required}

    text = {"description": "the key", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/v1/audit/checkpoint": read(
            "auditCheckpoint",
            "The latest signed checkpoint (C2SP signed note)",
            [],
            **{"404": _problem("no checkpoint yet")},
        ),
        "/v1/audit/entries": read(
            "auditEntries", "The token's tenant's entries of a range", [num("from"), num("to")]
        ),
        "/v1/audit/proof/inclusion": read(
            "auditInclusion",
            "Inclusion proof of one entry of the token's tenant (RFC 9162 §2.1.3)",
            [num("index", True), num("size")],
            **{"404": _problem("no such entry of this tenant")},
        ),
        "/v1/audit/proof/consistency": read(
            "auditConsistency",
            "Consistency proof between two tree sizes (RFC 9162 §2.1.4)",
            [num("first", True), num("second", True)],
        ),
        "/.well-known/herald-audit-key": {
            "get": {
                "summary": "The audit verifier key (signed-note verifier key text)",
                "operationId": "auditKey",
                "security": [],
                "responses": {"200": text},
            }
        },
        "/v1/webpush/vapid-key": {
            "get": {
                "summary": "The VAPID applicationServerKey for pushManager.subscribe",
                "operationId": "vapidKey",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the key",
                        "content": {"application/json": {"schema": obj}},
                    },
                    "503": _problem("no VAPID key yet"),
                },
            }
        },
    }


#: RFC 7523 §2.2 ``private_key_jwt``: the alternative to the Basic header (never both).
_CLIENT_ASSERTION_FIELDS: dict[str, Any] = {
    "client_assertion_type": {
        "type": "string",
        "const": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "description": "With client_assertion, instead of an Authorization header.",
    },
    "client_assertion": {
        "type": "string",
        "maxLength": limits.CLIENT_ASSERTION_MAX,
        "description": (
            "A JWT signed EdDSA (Ed25519) with an active Ed25519 request-signing key of the "
            "app, named by the header's kid; iss = sub = client id; aud = the issuer (or the "
            f"endpoint URL); exp at most {limits.CLIENT_ASSERTION_LIFETIME_MAX} s ahead; iat; "
            "jti, single-use."
        ),
    },
    "client_id": {
        "type": "string",
        "description": "Optional with a client_assertion; must then equal its iss and sub.",
    },
}
#: ``PushSubscription.toJSON()`` as the Web Push channel validates it (an object whose
#: members are checked by the channel, not by the request type: unknown ones are refused).
_PUSH_SUBSCRIPTION: dict[str, Any] = {
    "type": "object",
    "required": ["endpoint", "keys"],
    "additionalProperties": False,
    "properties": {
        "endpoint": {"type": "string", "format": "uri", "maxLength": URL_MAX},
        "expirationTime": {"type": ["number", "null"], "minimum": 0},
        "keys": {
            "type": "object",
            "required": ["p256dh", "auth"],
            "additionalProperties": False,
            "properties": {
                "p256dh": {"type": "string", "description": "base64url, 65 bytes"},
                "auth": {"type": "string", "description": "base64url, 16 bytes"},
            },
        },
    },
}
#: Basic, or no header (then a client assertion in the form).
_CLIENT_AUTH: list[dict[str, list[str]]] = [{"basic": []}, {}]


#: Refusals that any operation of a given shape can answer, whatever its handler does:
#: the body checks (size, media type, syntax) for an operation with a body, the token and
#: rate-limit checks for one that needs credentials, and a missing object for one whose path
#: names it. API fuzzing (tests/api/test_api_fuzz.py) holds every answer to this document.
_BODY_REFUSALS = {
    "400": "invalid request",
    "413": "body too large",
    "415": "not the declared media type",
}
_AUTH_REFUSALS = {
    "401": "invalid or missing credentials",
    "403": "not allowed for these credentials",
    "429": "rate limited (Retry-After says when to try again)",
}
_PATH_REFUSALS = {"404": "no such object (or one of another tenant)"}


def _declare_refusals(paths: dict[str, Any]) -> None:
    """Add the refusals each operation's shape implies to its responses (never replacing)."""
    for item in paths.values():
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method == "parameters":
                continue
            params = [*shared, *operation.get("parameters", [])]
            implied: dict[str, str] = {}
            if "requestBody" in operation:
                implied |= _BODY_REFUSALS
            if operation.get("security"):
                implied |= _AUTH_REFUSALS
            if any(param["in"] == "path" for param in params):
                implied |= _PATH_REFUSALS
            responses = operation["responses"]
            for status, description in implied.items():
                responses.setdefault(status, _problem(description))


def openapi_document(base_url: str) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document for a server at ``base_url``."""
    _, components = msgspec.json.schema_components(
        [
            PublishRequest,
            SubscriberTokenRequest,
            DeviceRequest,
            TemplateSpec,
            PreviewRequest,
            RecipientRequest,
            LoginRequest,
            TenantRequest,
            AppRequest,
            ScopesRequest,
            KeyRequest,
            WebPushRequest,
        ],
        ref_template=_REF,
    )
    components["WebPushRequest"]["properties"]["subscription"] = _PUSH_SUBSCRIPTION
    schemas = {**components, **_RESPONSES, **_ADMIN_RESPONSES}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    subscriber: list[dict[str, list[str]]] = [{"subscriber": []}]
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
    }
    paths: dict[str, Any] = {
        "/oauth/token": {
            "post": {
                "summary": "Client credentials grant (RFC 6749 §4.4)",
                "description": (
                    "When the server requests client certificates (HERALD_TLS_CLIENT_CA_FILE) "
                    "and the connection presents one, the token carries cnf.x5t#S256 and is "
                    "accepted only over connections presenting that certificate (RFC 8705 §3)."
                ),
                "operationId": "token",
                "security": _CLIENT_AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["grant_type"],
                                "properties": {
                                    "grant_type": {"type": "string", "const": "client_credentials"},
                                    "scope": {"type": "string"},
                                    **_CLIENT_ASSERTION_FIELDS,
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json("TokenResponse", "an access token"),
                    "400": _problem("invalid request"),
                    "401": _problem("client authentication failed"),
                },
            }
        },
        "/oauth/revoke": {
            "post": {
                "summary": "Revoke a token of the authenticated client (RFC 7009)",
                "operationId": "revoke",
                "security": _CLIENT_AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {
                                    "token": {"type": "string"},
                                    "token_type_hint": {"type": "string"},
                                    **_CLIENT_ASSERTION_FIELDS,
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "revoked, or nothing to revoke (RFC 7009 §2.2)",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _problem("invalid request"),
                    "401": _problem("client authentication failed"),
                    "403": _problem("the token belongs to another client"),
                    "429": _problem("client id or address locked out"),
                },
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "summary": "Token-signing public keys (RFC 7517)",
                "operationId": "jwks",
                "security": [],
                "responses": {
                    "200": {
                        "description": "JWK Set",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/.well-known/oauth-authorization-server": {
            "get": {
                "summary": "RFC 8414 metadata",
                "operationId": "oauthMetadata",
                "security": [],
                "responses": {
                    "200": {
                        "description": "metadata",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/v1/messages": {
            "post": {
                "summary": "Publish one message",
                "operationId": "publish",
                "security": bearer,
                "parameters": [idem],
                "requestBody": _body("PublishRequest"),
                "responses": {
                    "202": _json("Published", "accepted and durable"),
                    "413": _problem("body too large"),
                    "415": _problem("not JSON"),
                    "422": _problem("idempotency key reused"),
                    **_COMMON,
                },
            }
        },
        "/v1/messages:batch": {
            "post": {
                "summary": "Publish up to 1,000 messages",
                "operationId": "publishBatch",
                "security": bearer,
                "parameters": [idem],
                "requestBody": _body("Batch"),
                "responses": {
                    "202": _json("BatchResult", "per-message results"),
                    "413": _problem("body too large"),
                    "415": _problem("not JSON"),
                    "422": _problem("idempotency key reused"),
                    **_COMMON,
                },
            }
        },
        "/v1/messages/{message_id}": {
            "get": {
                "summary": "A message with its deliveries",
                "operationId": "getMessage",
                "security": bearer,
                "parameters": [
                    {
                        "name": "message_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {
                    "200": _json("MessageView", "the message"),
                    "404": _problem("not found"),
                    **_COMMON,
                },
            }
        },
        **_plan_paths(bearer),
        **_admin_paths(),
        **_audit_paths([*bearer, *subscriber, {"operator": []}]),
        "/v1/topics/{topic}/messages": {
            "get": {
                "summary": "Topic history, oldest first",
                "operationId": "history",
                "security": bearer,
                "parameters": [
                    {"name": "topic", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "format": "uuid"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {"200": _json("History", "a page of history"), **_COMMON},
            }
        },
        "/v1/subscriber-tokens": {
            "post": {
                "summary": "Mint a subscriber token",
                "operationId": "subscriberToken",
                "security": bearer,
                "requestBody": _body("SubscriberTokenRequest"),
                "responses": {
                    "201": _json("SubscriberToken", "the token"),
                    "413": _problem("body too large"),
                    "415": _problem("not JSON"),
                    **_COMMON,
                },
            }
        },
        "/v1/recipients/{recipient}/devices": {
            "parameters": [
                {"name": "recipient", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "post": {
                "summary": "Register an end-to-end device key (X25519, base64url)",
                "operationId": "registerDevice",
                "security": [*bearer, *subscriber],
                "requestBody": _body("DeviceRequest"),
                "responses": {
                    "201": _json("Device", "the device"),
                    "413": _problem("body too large"),
                    "415": _problem("not JSON"),
                    **_COMMON,
                },
            },
            "get": {
                "summary": "A recipient's end-to-end device keys",
                "operationId": "listDevices",
                "security": bearer,
                "responses": {"200": _json("DeviceList", "the devices"), **_COMMON},
            },
        },
        "/v1/stream-tickets": {
            "post": {
                "summary": "Exchange a subscriber token for a 30 s one-time ticket",
                "operationId": "streamTicket",
                "security": subscriber,
                "responses": {
                    "201": _json("StreamTicket", "the ticket"),
                    "401": _problem("invalid subscriber token"),
                },
            }
        },
        "/v1/webpush/subscriptions": {
            "post": {
                "summary": "Register a browser's Web Push subscription for the token's recipient",
                "description": (
                    "The body is PushSubscription.toJSON() of the browser, under subscription: "
                    "an https endpoint the egress guard allows, keys.p256dh an uncompressed "
                    "P-256 point and keys.auth 16 bytes (base64url), no other fields. The "
                    "recipient's other endpoints stay."
                ),
                "operationId": "addWebPushSubscription",
                "security": subscriber,
                "requestBody": _body("WebPushRequest"),
                "responses": {
                    "201": _json("WebPushEndpoint", "registered"),
                    "200": _json("WebPushEndpoint", "this push endpoint URL was registered"),
                    "400": _problem("invalid subscription, or the recipient has 32 endpoints"),
                    "401": _problem("invalid or missing subscriber token"),
                    "503": _problem("delivery channels are not running on this node"),
                },
            }
        },
        "/v1/stream/sse": {
            "get": {
                "summary": "Server-Sent Events stream",
                "operationId": "streamSse",
                "security": subscriber,
                "parameters": [
                    {
                        "name": "topics",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "ticket",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_COMMON,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "security": [],
                "responses": {
                    "200": {
                        "description": "alive",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness and security posture",
                "operationId": "readyz",
                "security": [],
                "responses": {
                    "200": {
                        "description": "ready",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "503": _problem("not ready (the checks are extension members)"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This OpenAPI 3.1 document",
                "operationId": "openapi",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    _declare_refusals(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald",
            "version": __version__,
            "description": (
                "Unified message push platform. The WebSocket stream is GET /v1/stream "
                "(see docs/api.md)."
            ),
        },
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "basic": {"type": "http", "scheme": "basic"},
                "subscriber": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a subscriber token from /v1/subscriber-tokens",
                },
                "operator": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "an operator token from /v1/admin/login (the web console sends it in "
                        "its session cookie instead, with X-CSRF-Token on changes)"
                    ),
                },
            },
        },
    }


@functools.cache
def openapi_json(base_url: str) -> bytes:
    """The document for ``base_url``, encoded once.

    It depends on nothing else, and ``GET /openapi.json`` needs no credentials: building
    it per request (a few milliseconds of schema generation) would be free work for anyone.
    """
    return msgspec.json.encode(openapi_document(base_url))
