"""The HTTP API routes: OAuth, messages, subscriber tokens, tickets, well-known documents."""

from __future__ import annotations

import base64
import binascii
import hashlib
from urllib.parse import parse_qs, unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald import limits
from herald.core.ids import parse_message_id
from herald.core.messages import (
    DeviceRequest,
    PublishBatch,
    PublishRequest,
    SubscriberTokenRequest,
    decode_json,
    validate_publish,
)
from herald.core.policy import Action, Resource, authorize
from herald.core.topics import validate_topic
from herald.crypto.certbinding import binding_holds
from herald.crypto.tokens import AccessClaims, SubscriberClaims
from herald.errors import (
    PROBLEM_TYPE_PREFIX,
    ApiError,
    BadRequest,
    DigestMismatch,
    InvalidClient,
    InvalidToken,
    KeyRevoked,
    KeyUnknown,
    ReplayedRequest,
    RequestExpired,
    SignatureInvalid,
    SignatureMissing,
    UnsupportedMediaType,
)
from herald.server.requests import bearer_token, read_body, require_json
from herald.server.responses import json_response
from herald.server.tls_extension import client_thumbprint
from herald.service import (
    assertions,
    audit,
    devices,
    identity,
    messages,
    revocation,
    signatures,
    streams,
    throttle,
)
from herald.service.runtime import Runtime
from herald.storage.base import AppRecord

__all__ = ["routes"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: Refusals that service.signatures already recorded in the audit log.
_SIGNATURE_REFUSALS = (
    SignatureMissing,
    SignatureInvalid,
    DigestMismatch,
    RequestExpired,
    ReplayedRequest,
    KeyUnknown,
    KeyRevoked,
)


def runtime(request: Request) -> Runtime:
    """The node's runtime, stored on the app at start-up."""
    rt: Runtime = request.app.state.runtime
    return rt


async def access_claims(request: Request) -> AccessClaims:
    """Verify the bearer access token (DESIGN §4 step 2) and spend one of the app's tokens.

    The rate-limit fields of the decision go out with the response (see
    :func:`ratelimit_fields`); a refusal is 429.
    """
    token = bearer_token(request)
    rt = runtime(request)
    if token is None:
        rt.metrics.record_auth_failure("missing_token")
        raise InvalidToken("an access token is required (Authorization: Bearer …)")
    try:
        claims = await rt.verify_access(token)
    except InvalidToken:
        rt.metrics.record_auth_failure("invalid_token")
        raise
    # RFC 8705 §3: a certificate-bound token only over a connection presenting that cert.
    if not binding_holds(claims.cnf_x5t_s256, client_thumbprint(request.scope)):
        rt.metrics.record_auth_failure("certificate_mismatch")
        raise InvalidToken
    await revocation.ensure_live(rt, claims)
    request.state.ratelimit = await throttle.admit_app(rt, claims.client_id)
    return claims


async def app_allowed(request: Request, action: Action) -> AccessClaims:
    """Verify the access token and authorise ``action`` on the app's own tenant."""
    claims = await access_claims(request)
    authorize(claims.principal, action, Resource(claims.tenant_id))
    return claims


async def subscriber_claims(request: Request, token: str) -> SubscriberClaims:
    """Verify a subscriber token and spend one of the subscriber's tokens (429 if none)."""
    rt = runtime(request)
    claims = await rt.verify_subscriber(token)
    await revocation.ensure_live(rt, claims)
    request.state.ratelimit = await throttle.admit_subscriber(rt, claims)
    return claims


async def verify_signature(request: Request, body: bytes, *, tenant_id: str, app_id: str) -> None:
    """RFC 9421 signature + nonce (DESIGN §4 steps 3–4) for a state-changing request.

    Required unless an operator turned ``require_signatures`` off (which warns); a request
    that carries a signature anyway is always verified.
    """
    rt = runtime(request)
    headers = request.headers
    if not rt.settings.require_signatures and "signature" not in headers:
        return
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    # Repeated fields combined as RFC 9110 §5.3 says, in one pass over the raw headers.
    combined: dict[str, str] = {}
    for raw_name, raw_value in request.scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        combined[name] = f"{combined[name]}, {value}" if name in combined else value
    signed = signatures.SignedRequest(
        method=request.method,
        path=raw_path.decode("latin-1"),
        query=request.scope.get("query_string", b"").decode("latin-1"),
        headers=combined,
        body=body,
    )
    await signatures.verify_request(rt, signed, tenant_id=tenant_id, app_id=app_id)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    # IETF httpapi-idempotency-key-header: the value is an opaque string; we accept
    # printable ASCII of bounded length so it can be stored and logged safely.
    if (
        not key
        or len(key) > limits.IDEMPOTENCY_KEY_MAX
        or not key.isascii()
        or not key.isprintable()
    ):
        raise BadRequest(
            f"Idempotency-Key must be 1-{limits.IDEMPOTENCY_KEY_MAX} printable ASCII characters"
        )
    return key


# -- OAuth ------------------------------------------------------------------------------------
def _basic_credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient(
            "authenticate with Authorization: Basic base64(id:secret), or a client_assertion "
            "(private_key_jwt)"
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


async def _authenticated_client(
    rt: Runtime, request: Request, form: dict[str, list[str]], *paths: str
) -> tuple[AppRecord, str]:
    """``client_secret_basic`` or ``private_key_jwt`` (RFC 7523) behind the lockout.

    A locked client id or address is refused before its secret or assertion is checked or
    anything is audited; an assertion counts against the client id it claims (unverified).
    ``paths`` are the endpoints an assertion's ``aud`` may name besides the issuer.
    Returns the app and the method it authenticated with.
    """
    assertion = assertions.read_client_assertion(
        form, has_authorization="authorization" in request.headers
    )
    if assertion is None:
        client_id, secret = _basic_credentials(request)
    else:
        client_id, secret = assertion.claimed_client_id, ""
    address = request.client.host if request.client is not None else None
    await throttle.check_lockout(rt, client_id, address)
    try:
        if assertion is None:
            app = await identity.authenticate_client(rt, client_id, secret)
        else:
            base = rt.settings.base_url
            audiences = {base, *(base + path for path in paths)}
            app = await assertions.authenticate(rt, assertion, audiences=audiences)
    except InvalidClient:
        await throttle.record_login(rt, client_id, address, ok=False)
        raise
    await throttle.record_login(rt, client_id, address, ok=True)
    return app, "client_secret_basic" if assertion is None else assertions.METHOD


async def oauth_token(request: Request) -> Response:
    """``POST /oauth/token``: the client credentials grant (RFC 6749 §4.4)."""
    rt = runtime(request)
    raw = await read_body(request, limits.TOKEN_REQUEST_MAX_BYTES)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("send the token request as application/x-www-form-urlencoded")
    try:
        form = parse_qs(raw.decode("ascii"), strict_parsing=bool(raw), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(
            "the token request is not a valid form", extra={"error": "invalid_request"}
        ) from None
    grant = form.get("grant_type")
    if grant is None:
        raise BadRequest("grant_type is required", extra={"error": "invalid_request"})
    if grant != ["client_credentials"]:
        raise BadRequest(
            "only grant_type=client_credentials is supported",
            slug="unsupported-grant-type",
            extra={"error": "unsupported_grant_type"},
        )
    scope = form.get("scope")
    app, method = await _authenticated_client(rt, request, form, "/oauth/token")
    await verify_signature(request, raw, tenant_id=app.tenant_id, app_id=app.id)
    # RFC 8705 §3: a client certificate on this connection binds the token to it.
    bound_to = client_thumbprint(request.scope) if rt.settings.cert_bound_tokens else None
    try:
        body = await identity.issue_access_token(
            rt, app, scope[0] if scope else None, auth_method=method, bound_to=bound_to
        )
    except BadRequest as exc:
        # RFC 6749 §5.2: OAuth clients look for the "error" member.
        exc.extra.setdefault("error", "invalid_scope")
        raise
    return json_response(body, headers=_NO_STORE)


async def oauth_revoke(request: Request) -> Response:
    """``POST /oauth/revoke``: RFC 7009 token revocation by the client that got the token.

    Client authentication (and its lockout) as at the token endpoint; signed like it.
    ``200`` with an empty body whether or not the token was valid (§2.2).
    """
    rt = runtime(request)
    raw = await read_body(request, 16384)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("send the revocation as application/x-www-form-urlencoded")
    try:
        form = parse_qs(raw.decode("ascii"), strict_parsing=bool(raw), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(
            "the revocation request is not a valid form", extra={"error": "invalid_request"}
        ) from None
    token = form.get("token")
    if token is None or len(token) != 1:
        raise BadRequest("token is required, once", extra={"error": "invalid_request"})
    app, _ = await _authenticated_client(rt, request, form, "/oauth/token", "/oauth/revoke")
    await verify_signature(request, raw, tenant_id=app.tenant_id, app_id=app.id)
    # token_type_hint is optional and only a hint (§2.1): both kinds are recognised anyway.
    await revocation.revoke(rt, app, token[0])
    return json_response({}, headers=_NO_STORE)  # §2.2: the body is ignored by clients


async def jwks(request: Request) -> Response:
    """``GET /.well-known/jwks.json`` (RFC 7517)."""
    rt = runtime(request)
    max_age = rt.settings.jwks_max_age
    return json_response(rt.token_service().jwks(), headers={"Cache-Control": f"max-age={max_age}"})


async def oauth_metadata(request: Request) -> Response:
    """``GET /.well-known/oauth-authorization-server`` (RFC 8414 §2)."""
    settings = runtime(request).settings
    base = settings.base_url
    # RFC 8705 §3.3: advertised only when client certificates are requested.
    binding = {"tls_client_certificate_bound_access_tokens": True}
    return json_response(
        {
            "issuer": base,
            "token_endpoint": base + "/oauth/token",
            "jwks_uri": base + "/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "revocation_endpoint": base + "/oauth/revoke",
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "private_key_jwt",
            ],
            "response_types_supported": [],
            "scopes_supported": [
                "publish:<pattern>",
                "subscribe:<pattern>",
                "messages:read",
                "admin",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "Ed25519"],
            "revocation_endpoint_auth_signing_alg_values_supported": ["EdDSA", "Ed25519"],
            **(binding if settings.cert_bound_tokens else {}),
        },
        headers={"Cache-Control": "max-age=300"},
    )


# -- messages ---------------------------------------------------------------------------------
async def _refused(rt: Runtime, claims: AccessClaims, reasons: list[str]) -> None:
    """Audit refused publishes of an authenticated app (the reason slug, never the body)."""
    await audit.record(
        rt,
        tenant=claims.tenant_id,
        actor=f"app:{claims.client_id}",
        action="message.refused",
        obj=f"app:{claims.client_id}",
        reasons=sorted(set(reasons)),
        count=len(reasons),
    )
    rt.metrics.record_publish("refused", len(reasons))


async def publish_one(request: Request) -> Response:
    """``POST /v1/messages``."""
    rt = runtime(request)
    claims = await access_claims(request)
    try:
        return await _publish_one(rt, request, claims)
    except ApiError as exc:
        if not isinstance(exc, _SIGNATURE_REFUSALS):  # those are audited where raised
            await _refused(rt, claims, [exc.slug])
        raise


async def _publish_one(rt: Runtime, request: Request, claims: AccessClaims) -> Response:
    raw = await read_body(request, rt.settings.max_body_bytes)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    require_json(request)
    key = _idempotency_key(request)
    req = validate_publish(decode_json(raw, PublishRequest))
    outcome = await messages.publish(
        rt,
        claims,
        [req],
        single=True,
        idempotency_key=key,
        request_hash=hashlib.sha256(raw).digest(),
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return json_response(outcome.body, outcome.status, headers)


async def publish_batch(request: Request) -> Response:
    """``POST /v1/messages:batch``: valid messages are stored, invalid ones answered."""
    rt = runtime(request)
    claims = await access_claims(request)
    try:
        response, refusals = await _publish_batch(rt, request, claims)
    except ApiError as exc:
        if not isinstance(exc, _SIGNATURE_REFUSALS):
            await _refused(rt, claims, [exc.slug])
        raise
    if refusals:
        await _refused(rt, claims, refusals)
    return response


async def _publish_batch(
    rt: Runtime, request: Request, claims: AccessClaims
) -> tuple[Response, list[str]]:
    raw = await read_body(request, limits.MAX_BATCH_BODY_BYTES)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    require_json(request)
    key = _idempotency_key(request)
    batch = decode_json(raw, PublishBatch)
    items: list[PublishRequest | ApiError] = []
    for element in batch.messages:
        try:
            items.append(validate_publish(decode_json(bytes(element), PublishRequest)))
        except ApiError as exc:
            items.append(exc)
    outcome = await messages.publish(
        rt,
        claims,
        items,
        single=False,
        idempotency_key=key,
        request_hash=hashlib.sha256(raw).digest(),
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    results = [] if outcome.replayed else outcome.body.get("results", [])
    refusals = [
        r["error"]["type"].removeprefix(PROBLEM_TYPE_PREFIX) for r in results if "error" in r
    ]
    return json_response(outcome.body, outcome.status, headers), refusals


async def get_message(request: Request) -> Response:
    """``GET /v1/messages/{id}``."""
    rt = runtime(request)
    claims = await access_claims(request)
    message_id = parse_message_id(request.path_params["message_id"])
    return json_response(await messages.get_message(rt, claims, message_id))


async def cancel_message(request: Request) -> Response:
    """``POST /v1/messages/{id}:cancel``: cancel a scheduled message until it is due."""
    rt = runtime(request)
    claims = await access_claims(request)
    raw = await read_body(request, 1024)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    message_id = parse_message_id(request.path_params["message_id"])
    return json_response(await messages.cancel_scheduled(rt, claims, message_id))


async def topic_history(request: Request) -> Response:
    """``GET /v1/topics/{topic}/messages?since=&limit=``."""
    rt = runtime(request)
    claims = await access_claims(request)
    topic = validate_topic(request.path_params["topic"])
    since = request.query_params.get("since")
    limit_text = request.query_params.get("limit", "100")
    numeric = limit_text.isascii() and limit_text.isdigit()
    if not numeric or not 1 <= int(limit_text) <= limits.HISTORY_PAGE_MAX:
        raise BadRequest(f"limit must be an integer from 1 to {limits.HISTORY_PAGE_MAX}")
    since_id = parse_message_id(since) if since else None
    return json_response(await messages.history(rt, claims, topic, since_id, int(limit_text)))


# -- subscribers ------------------------------------------------------------------------------
async def subscriber_token(request: Request) -> Response:
    """``POST /v1/subscriber-tokens``."""
    rt = runtime(request)
    claims = await access_claims(request)
    raw = await read_body(request, rt.settings.max_body_bytes)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    require_json(request)
    req = decode_json(raw, SubscriberTokenRequest)
    body = await streams.issue_subscriber_token(rt, claims, req)
    return json_response(body, 201, _NO_STORE)


async def stream_ticket(request: Request) -> Response:
    """``POST /v1/stream-tickets``: bearer subscriber token → one-time 30 s ticket.

    Not signed: its callers are browsers holding a subscriber token, not an app key. It
    changes nothing durable; the ticket is single-use and lives 30 s.
    """
    rt = runtime(request)
    token = bearer_token(request)
    if token is None:
        raise InvalidToken("a subscriber token is required (Authorization: Bearer …)")
    claims = await subscriber_claims(request, token)
    authorize(claims.principal, Action.STREAM_TICKET_ISSUE, Resource(claims.tenant_id))
    return json_response(await streams.issue_stream_ticket(rt, claims), 201, _NO_STORE)


async def register_device(request: Request) -> Response:
    """``POST /v1/recipients/{recipient}/devices``.

    A device registers itself with its recipient's subscriber token (unsigned: it holds no
    app key), or an app registers one with an ``admin``-scoped, signed access token.
    """
    rt = runtime(request)
    recipient = request.path_params["recipient"]
    token = bearer_token(request)
    raw = await read_body(request, 4096)
    if token is not None and rt.token_service().kind_of(token) == "subscriber":
        sub = await subscriber_claims(request, token)
        principal = sub.principal
        authorize(principal, Action.DEVICE_REGISTER, Resource(sub.tenant_id, recipient=recipient))
    else:
        claims = await access_claims(request)
        principal = claims.principal
        where = Resource(claims.tenant_id, recipient=recipient)
        authorize(principal, Action.DEVICE_REGISTER, where)
        await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    require_json(request)
    req = decode_json(raw, DeviceRequest)
    body = await devices.register_device(rt, principal.home, recipient, req, actor=principal.actor)
    return json_response(body, 201)


async def list_devices(request: Request) -> Response:
    """``GET /v1/recipients/{recipient}/devices``: public keys to seal e2e content to."""
    rt = runtime(request)
    claims = await access_claims(request)
    authorize(claims.principal, Action.DEVICE_LIST, Resource(claims.tenant_id))
    return json_response(
        await devices.list_devices(rt, claims.tenant_id, request.path_params["recipient"])
    )


def routes() -> list[Route]:
    """The API routes (order matters only for overlapping paths; there are none)."""
    return [
        Route("/oauth/token", oauth_token, methods=["POST"]),
        Route("/oauth/revoke", oauth_revoke, methods=["POST"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", oauth_metadata, methods=["GET"]),
        Route("/v1/messages", publish_one, methods=["POST"]),
        Route("/v1/messages:batch", publish_batch, methods=["POST"]),
        Route("/v1/messages/{message_id}", get_message, methods=["GET"]),
        Route("/v1/messages/{message_id}:cancel", cancel_message, methods=["POST"]),
        Route("/v1/topics/{topic}/messages", topic_history, methods=["GET"]),
        Route("/v1/subscriber-tokens", subscriber_token, methods=["POST"]),
        Route("/v1/stream-tickets", stream_ticket, methods=["POST"]),
        Route("/v1/recipients/{recipient}/devices", register_device, methods=["POST"]),
        Route("/v1/recipients/{recipient}/devices", list_devices, methods=["GET"]),
    ]
