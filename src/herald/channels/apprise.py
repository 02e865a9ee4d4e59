"""The long tail through Apprise: one URL per endpoint, ``{"url": "<Apprise URL>"}``.

`Apprise <https://github.com/caronc/apprise>`_ speaks to ~150 services, each addressed by a
URL whose scheme names the service and whose parts carry its tokens, so the whole URL is a
secret field. Herald permits an explicit **allow-list** of network notification schemes;
everything else is refused, in particular the schemes that act on the Herald host itself
(``windows``, ``macosx``, ``dbus``, ``gnome``, ``glib``, ``syslog``…) and any scheme Apprise
does not know (``file://`` is a configuration or attachment location, never a target).
Operators add schemes with the constructor.

Two kinds of scheme are allowed:

- **Hosted** schemes (:data:`DEFAULT_HOSTED_SCHEMES`: ``json``/``jsons``, ``xml``/``xmls``,
  ``form``/``forms``, Gotify, Apprise API, Mattermost, Rocket.Chat): the URL's host is the
  server Apprise connects to, so it is an SSRF vector. Before each notification the host is
  resolved and every address checked with :func:`herald.channels.egress.check_url` under the
  egress policy (no loopback, private, link-local or metadata address unless allow-listed;
  plain ``http`` — ``json://`` and friends — only towards allow-listed networks).
- **Service** schemes (:data:`DEFAULT_SERVICE_SCHEMES`: Discord, Telegram, Pushover, …): the
  plugin always connects to the vendor's fixed public API and the URL's "host" is a token.

Apprise is made as safe as it allows: persistent storage in memory only, secrets masked in
its logs, redirects never followed (forced off even when the URL says ``redirect=yes``),
connect and read timeouts capped by the egress policy, and a URL that turns certificate
verification off (``verify=no``) is refused. Apprise uses ``requests``, which trusts
``certifi``'s bundle — or, when set, the bundle named by ``REQUESTS_CA_BUNDLE`` *instead*
(``HERALD_EGRESS_CA_FILE`` does not apply here).

**Residual risks** (operators who cannot accept them should use the ``webhook`` channel,
whose client connects to exactly the address it checked): Apprise resolves the host again
when it connects, so a DNS answer that changes between Herald's check and Apprise's connect
(DNS rebinding) can reach an address the check refused; and the response size is not capped.

Outcomes: Apprise reports only success or failure, so success → ``Delivered``, anything else
→ ``Retry`` ("the Apprise target refused or was unreachable"); a refused destination →
``Failed``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

from apprise import (
    Apprise,
    AppriseAsset,
    AppriseResultStatus,
    NotifyBase,
    NotifyFormat,
)

from herald.channels import _http, egress
from herald.channels.base import Delivered, DeliveryJob, Failed, Outcome, Retry
from herald.errors import BadRequest

__all__ = [
    "DEFAULT_HOSTED_SCHEMES",
    "DEFAULT_SERVICE_SCHEMES",
    "URL_MAX",
    "AppriseChannel",
]

#: Schemes whose URL host is the server Apprise connects to: checked against the egress
#: policy before every notification.
DEFAULT_HOSTED_SCHEMES: Final = frozenset(
    {
        "json", "jsons", "xml", "xmls", "form", "forms",  # generic HTTP receivers
        "gotify", "gotifys",
        "apprise", "apprises",  # an Apprise API server
        "mmost", "mmosts",  # Mattermost
        "rocket", "rockets",  # Rocket.Chat
    }
)  # fmt: skip
#: Schemes whose plugin only ever connects to the vendor's fixed public API over https.
DEFAULT_SERVICE_SCHEMES: Final = frozenset(
    {
        "discord", "tgram", "pover", "pbul", "slack", "gchat",
        "dingtalk", "feishu", "lark", "wecombot",
    }
)  # fmt: skip
#: Longest Apprise URL accepted.
URL_MAX: Final = 4096

_SCHEME_MAX = 32
_UNREACHABLE: Final = "the Apprise target refused or was unreachable"


def _load_plugins() -> None:
    """Import Apprise's plugins now, at start-up, not in the first request's event loop.

    Apprise imports them on first use (~0.3 s); its e-mail plugin imports the deprecated
    ``imghdr`` module, whose DeprecationWarning is Apprise's to fix, not Herald's to log.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        Apprise.instantiate("json://localhost/")


def _schemes(values: Iterable[str]) -> frozenset[str]:
    schemes = frozenset(value.strip().lower() for value in values)
    if not all(scheme.isascii() and scheme.isalnum() for scheme in schemes):
        raise ValueError("Apprise schemes are letters and digits, e.g. 'ntfys'")
    return schemes


class AppriseChannel:
    """Notifications through an allow-listed Apprise URL.

    Args:
        policy: The egress policy hosted schemes are checked against; its timeouts cap
            Apprise's own.
        hosted_schemes: Schemes to allow in addition to :data:`DEFAULT_HOSTED_SCHEMES` whose
            URL host is where the plugin connects (the host is checked).
        service_schemes: Schemes to allow in addition to :data:`DEFAULT_SERVICE_SCHEMES`
            whose plugin only reaches a fixed public API (nothing is checked: only list
            schemes whose plugin you have read).
        timeout: Seconds a whole notification may take (default: the policy's total).

    Raises:
        ValueError: A scheme that is not letters and digits, or a timeout that is not
            positive.
    """

    name: ClassVar[str] = "apprise"
    secret_fields: ClassVar[tuple[str, ...]] = ("url",)
    concurrency: ClassVar[int] = 4

    def __init__(
        self,
        policy: egress.EgressPolicy,
        *,
        hosted_schemes: Iterable[str] = (),
        service_schemes: Iterable[str] = (),
        timeout: float | None = None,
    ) -> None:
        self._policy = policy
        self._hosted = DEFAULT_HOSTED_SCHEMES | _schemes(hosted_schemes)
        self._service = (DEFAULT_SERVICE_SCHEMES | _schemes(service_schemes)) - self._hosted
        self._timeout = policy.total_timeout if timeout is None else timeout
        if self._timeout <= 0:
            raise ValueError("the Apprise timeout must be positive")
        _load_plugins()

    @property
    def schemes(self) -> frozenset[str]:
        """Every scheme this channel permits."""
        return self._hosted | self._service

    # -- validation ----------------------------------------------------------------------

    def validate(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise an endpoint (offline: host names are checked at delivery).

        Raises:
            BadRequest: Unknown fields, a scheme outside the allow-list, a URL Apprise cannot
                parse, ``verify=no``, or an IP-literal host the egress policy refuses.
                Messages never contain the URL.
        """
        if not isinstance(endpoint, Mapping):
            raise BadRequest("an apprise endpoint must be an object")
        unknown = sorted(str(key)[:64] for key in endpoint if key != "url")
        if unknown:
            raise BadRequest(
                "unknown apprise endpoint fields: " + ", ".join(unknown[:5]),
                extra={"allowed": ["url"]},
            )
        url = endpoint.get("url")
        self._load(url)
        return {"url": url}

    def _load(self, url: Any) -> tuple[Apprise, NotifyBase, str]:
        """The Apprise object holding exactly ``url``'s plugin, the plugin and its scheme."""
        if not isinstance(url, str) or not url:
            raise BadRequest("apprise url is required")
        if len(url) > URL_MAX:
            raise BadRequest(f"apprise url is longer than {URL_MAX} characters")
        if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
            raise BadRequest("apprise url must be ASCII without spaces (%-encode)")
        scheme, sep, _ = url.partition("://")
        scheme = scheme.lower()
        if not sep or not scheme.isalnum() or len(scheme) > _SCHEME_MAX:
            raise BadRequest("not a valid Apprise URL")
        self._check_scheme(scheme)
        notifier = Apprise(asset=self._asset())
        # add() splits a string on spaces and commas: exactly one target per endpoint.
        if not notifier.add(url) or len(notifier) != 1:
            raise BadRequest("not a valid Apprise URL")
        plugin = notifier[0]
        # The scheme Apprise settled on must be allowed too, not only the one written.
        canonical = str(plugin.schema).lower()
        self._check_scheme(canonical)
        if not plugin.verify_certificate:
            raise BadRequest("apprise url must not turn certificate verification off (verify=no)")
        if canonical in self._hosted:
            try:
                egress.validate_url(self._target(plugin), self._policy)
            except egress.EgressRefused as exc:
                raise BadRequest(f"apprise url refused: {exc.detail}") from None
        return notifier, plugin, canonical

    def _check_scheme(self, scheme: str) -> None:
        if scheme not in self.schemes:
            raise BadRequest(
                f"apprise scheme {scheme!r} is not allowed",
                extra={"allowed": sorted(self.schemes)},
            )

    @staticmethod
    def _asset() -> AppriseAsset:
        return AppriseAsset(
            storage_mode="memory",  # never write Apprise's cache files to disk
            secure_logging=True,  # mask secrets in Apprise's own log lines
            http_redirects=False,
            allow_templates=False,
            result_log_disk_size=0,  # captured logs stay in memory
        )

    @staticmethod
    def _target(plugin: NotifyBase) -> str:
        """The http(s) URL of the server a hosted plugin connects to (for the SSRF check)."""
        host = str(plugin.host or "")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = f":{plugin.port}" if isinstance(plugin.port, int) else ""
        return f"{'https' if plugin.secure else 'http'}://{host}{port}/"

    def _harden(self, plugin: NotifyBase) -> None:
        plugin.redirects = False  # a redirect could point anywhere: never followed
        plugin.socket_connect_timeout = min(
            plugin.socket_connect_timeout, self._policy.connect_timeout
        )
        plugin.socket_read_timeout = min(plugin.socket_read_timeout, self._policy.read_timeout)

    # -- delivery ------------------------------------------------------------------------

    async def deliver(self, job: DeliveryJob) -> Outcome:
        """Check the destination, then notify through Apprise."""
        try:
            self.validate(job.endpoint)
            notifier, plugin, scheme = self._load(job.endpoint["url"])
        except BadRequest as exc:
            return Failed(f"invalid apprise endpoint: {exc.detail}")
        if scheme in self._hosted:
            refused = await self._check_destination(plugin)
            if refused is not None:
                return refused
        self._harden(plugin)
        title = (job.title or "").strip()
        body = (job.body or "").strip() or title or job.topic  # Apprise needs a body
        if body == title:
            title = ""
        try:
            result = await asyncio.wait_for(
                notifier.async_notify(
                    body=body, title=title, body_format=NotifyFormat.TEXT, timeout=self._timeout
                ),
                # Apprise enforces ``timeout`` itself; this is the backstop.
                timeout=self._timeout + 1.0,
            )
        except TimeoutError:
            return Retry("the Apprise target timed out")
        try:
            if result:
                return Delivered("accepted by the Apprise target")
            if result.status == AppriseResultStatus.TIMEOUT:
                return Retry("the Apprise target timed out")
            return Retry(_UNREACHABLE)
        finally:
            result.close()

    async def _check_destination(self, plugin: NotifyBase) -> Outcome | None:
        """Resolve a hosted plugin's server now; an outcome when it may not be reached.

        Apprise connects on its own later, resolving the name again: see the module's
        residual risks.
        """
        try:
            await egress.check_url(self._target(plugin), self._policy)
        except egress.EgressRefused:
            return Failed(_http.REFUSED_REASON)
        except egress.EgressUnavailable:
            return Retry("the Apprise target's host does not resolve")
        return None
