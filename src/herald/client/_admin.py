"""The operator side of the SDK: sign in, manage tenants and apps, read the audit log.

::

    async with AsyncAdmin(url, "alice", password, ca=".herald/tls/ca.pem") as admin:
        tenant = await admin.create_tenant("acme")
        app = await admin.create_app(tenant["id"], ["publish:orders.>"])  # secret shown once
        entries = await admin.audit_entries(0, 100)

An operator token lives minutes (the server's choice); the client signs in again when it
expires or is refused, once per call. Operators hold no request-signing key: their calls
are bearer-authenticated over verified TLS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import httpx

from herald.client._api import TOKEN_REFRESH_MARGIN, encode_json, json_object
from herald.client._errors import AuthenticationError, HeraldClientError, problem_from_http
from herald.client._transport import connection_failed, make_async_client

__all__ = ["AsyncAdmin"]

_JSON = "application/json"


def _tenant_path(tenant: str) -> str:
    return f"/v1/admin/tenants/{quote(tenant, safe='')}"


def _app_path(client_id: str) -> str:
    return f"/v1/admin/apps/{quote(client_id, safe='')}"


class AsyncAdmin:
    """An operator's authenticated connection to a Herald server.

    Args:
        base_url: The server's base URL, e.g. ``https://127.0.0.1:8443``.
        name: The operator's sign-in name (``herald admin create NAME``).
        password: The operator's password.
        ca: A CA file to trust instead of the system store.
        transport: An ``httpx`` transport to use instead of the network (tests).
        clock: Monotonic clock in seconds, used for token expiry.
    """

    def __init__(
        self,
        base_url: str,
        name: str,
        password: str,
        *,
        ca: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._name = name
        self._password = password
        self._clock = clock
        self._client = make_async_client(self._base_url, ca=ca, transport=transport)
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        #: What the server said about the signed-in operator (id, tenant, role).
        self.operator: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

    # -- session ------------------------------------------------------------------------
    async def token(self) -> str:
        """A valid operator token, signing in when there is none or it is about to expire."""
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                body = await self._call(
                    "POST",
                    "/v1/admin/login",
                    {"name": self._name, "password": self._password},
                    token=None,
                )
                token, expires_in = body.get("access_token"), body.get("expires_in")
                if not isinstance(token, str) or not isinstance(expires_in, int):
                    raise HeraldClientError("the server answered an unexpected sign-in body")
                self._token = token
                margin = min(TOKEN_REFRESH_MARGIN, expires_in / 10)
                self._refresh_at = self._clock() + expires_in - margin
                operator = body.get("operator")
                self.operator = operator if isinstance(operator, dict) else {}
            return self._token

    async def logout(self) -> None:
        """Revoke the current operator token (the next call signs in again)."""
        if self._token is None:
            return
        token, self._token = self._token, None
        await self._call("POST", "/v1/admin/logout", None, token=token)

    async def _call(
        self, method: str, path: str, json: Any, *, token: str | None
    ) -> dict[str, Any]:
        headers = {"Accept": f"{_JSON}, application/problem+json"}
        content = None if json is None else encode_json(json)
        if content is not None:
            headers["Content-Type"] = _JSON
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self._client.request(method, path, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise connection_failed(self._base_url, exc) from exc
        if not response.is_success:
            raise problem_from_http(
                response.status_code,
                response.headers.get("content-type"),
                response.content,
                response.reason_phrase,
            )
        return json_object(response)

    async def _request(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        """One authenticated call; on 401 sign in again once (token revoked or expired)."""
        token = await self.token()
        try:
            return await self._call(method, path, json, token=token)
        except AuthenticationError:
            pass
        async with self._lock:
            if self._token == token:
                self._token = None
        return await self._call(method, path, json, token=await self.token())

    # -- tenants and apps ---------------------------------------------------------------
    async def tenants(self) -> list[dict[str, Any]]:
        """The tenants this operator administers."""
        body = await self._request("GET", "/v1/admin/tenants")
        return list(body.get("tenants", []))

    async def create_tenant(self, name: str) -> dict[str, Any]:
        """Create a tenant (global operators): ``{id, name, created_at, shredded}``."""
        return await self._request("POST", "/v1/admin/tenants", {"name": name})

    async def apps(self, tenant: str) -> list[dict[str, Any]]:
        """The apps of one tenant (never their secrets)."""
        body = await self._request("GET", f"{_tenant_path(tenant)}/apps")
        return list(body.get("apps", []))

    async def create_app(
        self, tenant: str, scopes: Sequence[str], *, name: str = "app"
    ) -> dict[str, Any]:
        """Create an app; the answer carries ``client_secret``, shown this once."""
        return await self._request(
            "POST",
            f"{_tenant_path(tenant)}/apps",
            {"scopes": list(scopes), "name": name},
        )

    async def disable_app(self, client_id: str) -> dict[str, Any]:
        """Disable an app: its live tokens are refused from now."""
        return await self._request("POST", f"{_app_path(client_id)}:disable")

    async def enable_app(self, client_id: str) -> dict[str, Any]:
        """Enable a disabled app (tokens from before stay refused)."""
        return await self._request("POST", f"{_app_path(client_id)}:enable")

    async def rotate_app_secret(self, client_id: str) -> dict[str, Any]:
        """A new client secret for an app (shown once); tokens got with the old one die."""
        return await self._request("POST", f"{_app_path(client_id)}:rotate-secret")

    async def set_scopes(self, client_id: str, scopes: Sequence[str]) -> dict[str, Any]:
        """Replace an app's scopes; its live tokens die (they carry the old ones)."""
        return await self._request(
            "PUT", f"{_app_path(client_id)}/scopes", {"scopes": list(scopes)}
        )

    async def app_keys(self, client_id: str) -> list[dict[str, Any]]:
        """An app's request-signing keys, revoked ones included (never a secret)."""
        body = await self._request("GET", f"{_app_path(client_id)}/keys")
        return list(body.get("keys", []))

    async def add_ed25519_key(self, client_id: str, public_key_pem: str) -> dict[str, Any]:
        """Register an Ed25519 public key (PEM) for an app's request signatures."""
        body = {"algorithm": "ed25519", "public_key": public_key_pem}
        return await self._request("POST", f"{_app_path(client_id)}/keys", body)

    async def add_hmac_key(self, client_id: str) -> dict[str, Any]:
        """Create an HMAC-SHA256 signing key; the answer's ``secret`` is shown this once."""
        return await self._request(
            "POST", f"{_app_path(client_id)}/keys", {"algorithm": "hmac-sha256"}
        )

    async def revoke_key(self, client_id: str, keyid: str) -> dict[str, Any]:
        """Revoke one signing key of an app."""
        return await self._request(
            "POST", f"{_app_path(client_id)}/keys/{quote(keyid, safe='')}:revoke"
        )

    async def data_key(self, tenant: str) -> dict[str, Any]:
        """A tenant's data-key versions and the progress of its latest re-encryption."""
        return await self._request("GET", f"{_tenant_path(tenant)}/data-key")

    async def rotate_data_key(self, tenant: str) -> dict[str, Any]:
        """A new data-key version now; stored content is re-encrypted in the background."""
        return await self._request("POST", f"{_tenant_path(tenant)}/data-key:rotate")

    # -- monitoring -----------------------------------------------------------------------
    async def overview(
        self, tenant: str, *, window: int = 3600, bucket: int = 60
    ) -> dict[str, Any]:
        """Activity per bucket, deliveries by channel and state, streams, dead letters."""
        query = urlencode({"window": window, "bucket": bucket})
        return await self._request("GET", f"{_tenant_path(tenant)}/overview?{query}")

    async def search_messages(
        self,
        tenant: str,
        *,
        topic: str | None = None,
        recipient: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> dict[str, Any]:
        """Message metadata (never content), newest first: ``{messages, next}``.

        ``topic`` is exact or a prefix ending in ``.>``; pass ``next`` as ``before`` for the
        following page.
        """
        params = {
            "topic": topic,
            "recipient": recipient,
            "state": state,
            "since": since.isoformat() if since is not None else None,
            "until": until.isoformat() if until is not None else None,
            "limit": limit,
            "before": before,
        }
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return await self._request("GET", f"{_tenant_path(tenant)}/messages?{query}")

    async def message(self, tenant: str, message_id: str) -> dict[str, Any]:
        """One message's metadata and every delivery (attempts, last error)."""
        return await self._request(
            "GET", f"{_tenant_path(tenant)}/messages/{quote(message_id, safe='')}"
        )

    async def deliveries(
        self, tenant: str, *, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> dict[str, Any]:
        """A tenant's deliveries (``state="dead"``: dead letters): ``{deliveries, next}``."""
        params = {"state": state, "limit": limit, "after": after}
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return await self._request("GET", f"{_tenant_path(tenant)}/deliveries?{query}")

    async def retry_delivery(self, tenant: str, delivery_id: str) -> dict[str, Any]:
        """Make a dead delivery due again (audited under this operator)."""
        return await self._request(
            "POST", f"{_tenant_path(tenant)}/deliveries/{quote(delivery_id, safe='')}:retry"
        )

    # -- audit --------------------------------------------------------------------------
    async def audit_checkpoint(self) -> dict[str, Any]:
        """The latest signed checkpoint ``{origin, size, root, note}``."""
        return await self._request("GET", "/v1/audit/checkpoint")

    async def audit_entries(self, start: int, end: int) -> dict[str, Any]:
        """Entries ``start`` (inclusive) to ``end`` (exclusive) the operator may see."""
        return await self._request("GET", f"/v1/audit/entries?from={start}&to={end}")
