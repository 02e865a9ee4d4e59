"""SSRF-guarded outbound HTTP: the only way an HTTP channel reaches the outside (DESIGN §7).

Webhooks, IM robots and Web Push send to URLs that tenants choose, so every request is a
potential server-side request forgery. This module makes one narrow path out:

1. **Parse strictly.** ``https`` only (``http`` only towards allow-listed networks), no
   ``user:password@``, port 1–65535, and host names that browsers, curl or ``inet_aton``
   would read as IPv4 in another notation (``2130706433``, ``0177.0.0.1``, ``0x7f.0.0.1``,
   ``127.1``) are refused as ambiguous rather than guessed at.
2. **Resolve once** and check *every* address (:func:`check_address`): IPv4-mapped IPv6 is
   normalised to IPv4 first, and IPv4 embedded in IPv4-compatible, 6to4, NAT64 and Teredo
   addresses is checked too. :data:`BLOCKED_NETWORKS` is refused unless the operator
   allow-lists a network (``HERALD_EGRESS_ALLOW``).
3. **Connect to the checked address.** The request URL carries the IP itself; the ``Host``
   header and the TLS server name (SNI and certificate check, via httpcore's
   ``sni_hostname`` extension) carry the host name. A DNS answer that changes between the
   check and the connection (DNS rebinding) therefore cannot redirect the request.
4. **Bound everything.** Redirects are returned, never followed; connect, read and total
   timeouts; the response body is read up to :attr:`EgressPolicy.max_response_bytes` and
   truncated beyond (it is never decompressed, so a compression bomb stays small); no
   cookies are kept and no proxy is taken from the environment.

Connections are pooled per ``(address, port, TLS server name)``: a connection verified for
one name is never reused for another name that happens to resolve to the same address.

Errors::

    HeraldError
    ├── EgressUnavailable           network failure or timeout: transient, retry later
    └── ApiError
        └── BadRequest (400)
            └── EgressRefused       egress-refused: this destination is not allowed

Messages name the host at most: never the path, query or credentials of a URL, and for host
names never the internal address they resolved to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import socket
import ssl
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self, TypeVar, cast
from urllib.parse import urlsplit

import httpx

from herald.errors import BadRequest, ConfigError, HeraldError

if TYPE_CHECKING:
    from types import TracebackType

    from herald.config import Settings

__all__ = [
    "BLOCKED_NETWORKS",
    "EgressClient",
    "EgressPolicy",
    "EgressRefused",
    "EgressResponse",
    "EgressUnavailable",
    "IPAddress",
    "IPNetwork",
    "Target",
    "check_address",
    "check_url",
    "parse_allow_list",
    "post",
    "request",
    "resolve",
    "ssl_context",
    "validate_url",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
_E = TypeVar("_E", bound=BaseException)

#: Never reached unless allow-listed (REFERENCES "SSRF", after Svix and GitLab). Cloud
#: metadata endpoints fall inside: 169.254.169.254 (169.254/16), fd00:ec2::254 (fc00::/7),
#: Alibaba's 100.100.100.200 (100.64/10).
BLOCKED_NETWORKS: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # RFC 6598 carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including 255.255.255.255
        "::1/128",  # loopback
        "::/128",  # unspecified
        "fe80::/10",  # link-local
        "fc00::/7",  # unique local
        "2001:db8::/32",  # documentation
        "64:ff9b::/96",  # NAT64 (RFC 6052): reaches any IPv4 through the gateway
        "2002::/16",  # 6to4 (RFC 3056): reaches any IPv4 through a relay
        "ff00::/8",  # multicast
    )
)

#: Deprecated IPv4-compatible addresses ``::a.b.c.d`` (RFC 4291 §2.5.5.1).
_IPV4_COMPATIBLE: Final = IPv6Network("::/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}

#: Idle connections kept per (address, port, server name), and how many such pools; the
#: least recently used idle pool is closed beyond that.
_KEEPALIVE_PER_TARGET: Final = 4
_MAX_POOLS: Final = 64
_LIMITS: Final = httpx.Limits(
    max_connections=32, max_keepalive_connections=_KEEPALIVE_PER_TARGET, keepalive_expiry=30.0
)

# WHATWG URL §3.5 "ends in a number": such a host is parsed as IPv4 by browsers.
_NUMERIC_LABEL: Final = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)
_DNS_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)


class EgressRefused(BadRequest):
    """The destination is not allowed (answered 400 ``egress-refused``).

    Raised for a scheme other than ``https`` (or ``http`` outside the allow-list), a URL with
    credentials, a bad port or host, an ambiguous IP literal, or an address in
    :data:`BLOCKED_NETWORKS` that is not allow-listed.
    """

    slug = "egress-refused"
    title = "Destination refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


class EgressUnavailable(HeraldError):
    """The destination could not be reached (DNS, connection, TLS, timeout): retry later.

    Attributes:
        reason: A short reason such as ``"timed out"``; never contains a URL.
        host: The host name or address, when known.
    """

    def __init__(self, reason: str, *, host: str | None = None) -> None:
        super().__init__(f"{host}: {reason}" if host else reason)
        self.reason = reason
        self.host = host


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What outbound requests may reach, and how long and how much they may take.

    Attributes:
        allow: Operator allow-list: addresses inside these networks pass even when blocked,
            and may be reached over plain ``http``.
        ca_file: A PEM CA bundle trusted in addition to the system trust store.
        connect_timeout: Seconds for DNS, TCP connect and the TLS handshake, each.
        read_timeout: Seconds of silence allowed while sending or reading.
        max_response_bytes: Response bytes kept; the rest is dropped (``truncated``).
        total_timeout: Seconds for a whole exchange, so a slow drip cannot hold a worker.
    """

    allow: tuple[IPNetwork, ...] = ()
    ca_file: Path | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_response_bytes: int = 64 * 1024
    total_timeout: float = 30.0

    def __post_init__(self) -> None:
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("egress timeouts must be positive")
        if self.max_response_bytes < 0:
            raise ValueError("max_response_bytes must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        """Build the policy from ``HERALD_EGRESS_ALLOW`` and ``HERALD_EGRESS_CA_FILE``.

        Raises:
            ConfigError: naming the setting, for an invalid network or a missing CA file.
        """
        ca_file = settings.egress_ca_file
        if ca_file is not None and not ca_file.is_file():
            raise ConfigError(f"HERALD_EGRESS_CA_FILE: {ca_file} does not exist or is not a file")
        return cls(allow=parse_allow_list(settings.egress_allow), ca_file=ca_file)

    def allows(self, ip: IPAddress) -> bool:
        """Whether ``ip`` (normalised) is inside an allow-listed network."""
        ip = _normalise(ip)
        return any(ip in net for net in self.allow)


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: connect to ``address``, speak to ``host``.

    Attributes:
        url: The URL, normalised, without fragment.
        host: The host as sent in ``Host`` and SNI (ASCII, IDNA-encoded).
        port: The effective port.
        address: The first resolved address; every resolved address passed the checks.
    """

    url: str
    host: str
    port: int
    address: IPAddress

    @property
    def scheme(self) -> str:
        """``https`` or (allow-listed only) ``http``."""
        return urlsplit(self.url).scheme


@dataclass(frozen=True, slots=True)
class EgressResponse:
    """What came back: 3xx included, as redirects are never followed.

    Attributes:
        status: The HTTP status code.
        headers: Lower-case names; repeated fields joined with ``", "``.
        body: At most ``max_response_bytes`` raw bytes (not decompressed).
        truncated: True when the server sent more than that.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool


def parse_allow_list(value: str) -> tuple[IPNetwork, ...]:
    """Parse ``HERALD_EGRESS_ALLOW``: comma-separated CIDRs (``10.1.0.0/16, fd00::/64``).

    Raises:
        ConfigError: naming ``HERALD_EGRESS_ALLOW`` and the invalid item.
    """
    networks: list[IPNetwork] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            net = ipaddress.ip_network(item)
        except ValueError:
            raise ConfigError(
                f"HERALD_EGRESS_ALLOW: {item!r} is not a network in CIDR notation "
                "(e.g. 10.1.0.0/16), or has host bits set"
            ) from None
        if isinstance(net, IPv6Network) and net.network_address.ipv4_mapped is not None:
            if net.prefixlen < 96:
                raise ConfigError(f"HERALD_EGRESS_ALLOW: {item!r} is wider than ::ffff:0:0/96")
            # Addresses are checked after IPv4-mapped normalisation, so allow the IPv4 form.
            mapped = net.network_address.ipv4_mapped
            net = IPv4Network(f"{mapped}/{net.prefixlen - 96}")
        networks.append(net)
    return tuple(networks)


@functools.lru_cache(maxsize=8)
def ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying TLS 1.2+ client context: the system store plus ``ca_file`` if given.

    Built once per CA file and shared (read-only after this function): loading the system
    trust store costs ~20 ms of CPU, which per delivery was most of a node's delivery
    time. A changed CA file is read at the next start.

    Raises:
        ConfigError: naming ``HERALD_EGRESS_CA_FILE`` when it cannot be loaded.
    """
    ctx = ssl.create_default_context()  # loads the system trust store
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=ca_file)  # added to, not replacing, the store
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise ConfigError(f"HERALD_EGRESS_CA_FILE: cannot load {ca_file} ({reason})") from None
    # create_default_context's values, stated so that a change of defaults cannot weaken
    # outbound TLS (RFC 9325 §3.1.1; OWASP ASVS V12.3).
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _normalise(ip: IPAddress) -> IPAddress:
    # RFC 4291 §2.5.5.2: ::ffff:a.b.c.d *is* the IPv4 address a.b.c.d on a dual-stack socket.
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _reached_through(ip: IPAddress) -> tuple[IPAddress, ...]:
    """``ip`` normalised, plus every IPv4 address a tunnel or translator would reach."""
    ip = _normalise(ip)
    if isinstance(ip, IPv4Address):
        return (ip,)
    found: list[IPAddress] = [ip]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are not IPv4-compatible
        found.append(IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _NAT64:  # RFC 6052 §2.2: /96 prefix, IPv4 in the last 32 bits
        found.append(IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return tuple(found)


def check_address(ip: IPAddress, policy: EgressPolicy) -> None:
    """Refuse ``ip`` unless it and every IPv4 address embedded in it may be reached.

    An address passes when it is outside every network of :data:`BLOCKED_NETWORKS` or inside
    an allow-listed network. IPv4-mapped addresses are checked as IPv4; for IPv4-compatible,
    NAT64, 6to4 and Teredo addresses the embedded IPv4 address must pass as well.

    Raises:
        EgressRefused: the address is not public and not allow-listed.
    """
    for candidate in _reached_through(ip):
        if policy.allows(candidate):
            continue
        if any(candidate in net for net in BLOCKED_NETWORKS):
            raise EgressRefused(
                f"{ip} is not a public address (operators may allow it with HERALD_EGRESS_ALLOW)"
            )


def _parse_host(host: str) -> IPAddress | None:
    """The address of an IP-literal host, or None for a DNS name; refuse anything else."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        if "%" in host:
            raise EgressRefused("scoped IPv6 addresses are not allowed")
        try:
            return IPv6Address(host)
        except ValueError:
            raise EgressRefused("invalid IPv6 address") from None
    name = host.removesuffix(".")
    labels = name.split(".")
    # Browsers read a host whose last label is a number as IPv4 (WHATWG URL "ends in a
    # number"); inet_aton, and so curl and getaddrinfo, accepts octal, hex, short and integer
    # forms. Either way only the canonical dotted-quad is accepted.
    if _NUMERIC_LABEL.fullmatch(labels[-1]) or _inet_aton_accepts(host):
        if name == host:
            with contextlib.suppress(ValueError):
                return IPv4Address(host)  # rejects leading zeros, hex, short and integer forms
        raise EgressRefused("ambiguous IP literal: write IPv4 addresses as four decimals")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise EgressRefused("invalid host name")
    return None


def _inet_aton_accepts(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


async def _getaddrinfo(host: str, port: int) -> list[str]:
    """The system resolver (replaced by tests that need a third party's DNS answer)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos if info[0] in {socket.AF_INET, socket.AF_INET6}]


async def resolve(host: str, port: int, *, dns_timeout: float = 5.0) -> list[IPAddress]:
    """Resolve ``host`` once: its addresses, IPv4-mapped ones normalised, in resolver order.

    IP literals are parsed, not looked up; ambiguous IPv4 notations are refused.

    Raises:
        EgressRefused: ``host`` is an ambiguous IP literal or not a valid host name.
        EgressUnavailable: the name does not resolve, or not within ``dns_timeout`` seconds.
    """
    literal = _parse_host(host)
    if literal is not None:
        return [_normalise(literal)]
    try:
        async with asyncio.timeout(dns_timeout):
            answers = await _getaddrinfo(host, port)
    except TimeoutError:
        raise EgressUnavailable("DNS lookup timed out", host=host) from None
    except OSError:
        raise EgressUnavailable("host name does not resolve", host=host) from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            ip = _normalise(ipaddress.ip_address(answer))
        except ValueError:
            continue
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise EgressUnavailable("host name has no address", host=host)
    return addresses


def _parse_url(url: str) -> tuple[httpx.URL, str, int]:
    try:
        parsed = httpx.URL(url)
        netloc = urlsplit(url).netloc
    except (httpx.InvalidURL, TypeError, ValueError):
        with contextlib.suppress(ValueError):
            _parse_host(urlsplit(url).hostname or "")  # a better reason, e.g. 0177.0.0.1
        raise EgressRefused("not a valid URL") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise EgressRefused("only https URLs are allowed")
    if parsed.userinfo or "@" in netloc:
        raise EgressRefused("URLs must not carry credentials (user:password@)")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise EgressRefused("the URL has no host")
    port = _DEFAULT_PORTS[parsed.scheme] if parsed.port is None else parsed.port
    if not 1 <= port <= 65535:
        raise EgressRefused("the port must be between 1 and 65535")
    return parsed.copy_with(fragment=None), host, port


def validate_url(url: str, policy: EgressPolicy) -> str:
    """Check what can be checked without DNS (for synchronous endpoint validation).

    Everything :func:`check_url` checks, except the addresses of host names; an IP-literal
    host is checked fully.

    Returns:
        The normalised URL, without fragment.

    Raises:
        EgressRefused: as :func:`check_url`.
    """
    parsed, host, _ = _parse_url(url)
    literal = _parse_host(host)
    if literal is not None:
        _check_addresses(parsed.scheme, host, [_normalise(literal)], policy, literal=True)
    return str(parsed)


def _check_addresses(
    scheme: str, host: str, addresses: list[IPAddress], policy: EgressPolicy, *, literal: bool
) -> None:
    for ip in addresses:
        try:
            check_address(ip, policy)
        except EgressRefused:
            if literal:
                raise
            # Not the address itself: that would tell a tenant what internal names resolve to.
            raise EgressRefused(f"{host} resolves to an address that is not public") from None
    if scheme == "http" and not all(policy.allows(ip) for ip in addresses):
        raise EgressRefused("only https URLs are allowed (http only to allow-listed networks)")


async def check_url(url: str, policy: EgressPolicy) -> Target:
    """Check ``url`` and resolve its host once; at save time and again at send time.

    Returns:
        The target, with the first resolved address to connect to.

    Raises:
        EgressRefused: the URL or any address it resolves to is not allowed.
        EgressUnavailable: the host name does not resolve (in time).
    """
    parsed, host, port = _parse_url(url)
    literal = _parse_host(host) is not None
    addresses = await resolve(host, port, dns_timeout=policy.connect_timeout)
    _check_addresses(parsed.scheme, host, addresses, policy, literal=literal)
    return Target(url=str(parsed), host=host, port=port, address=addresses[0])


def _pinned_request(
    method: str,
    target: Target,
    content: bytes | None,
    headers: Mapping[str, str] | None,
    policy: EgressPolicy,
) -> httpx.Request:
    """A request to ``target.address`` that speaks to ``target.host``."""
    url = httpx.URL(target.url)
    default_port = _DEFAULT_PORTS[url.scheme] == target.port
    host = f"[{target.host}]" if ":" in target.host else target.host
    sent = httpx.Headers(headers)
    for name in ("host", "content-length", "transfer-encoding"):  # ours to set, not a caller's
        sent.pop(name, None)
    sent["Host"] = host if default_port else f"{host}:{target.port}"
    sent.setdefault("Accept-Encoding", "identity")  # bodies are capped, never decompressed
    sent.setdefault("User-Agent", "Herald")
    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.read_timeout,
        write=policy.read_timeout,
        pool=policy.connect_timeout,
    )
    extensions: dict[str, object] = {"timeout": timeout.as_dict()}
    if url.scheme == "https" and _parse_host(target.host) is None:
        # RFC 6066 §3: SNI carries the name without a trailing dot; httpcore verifies the
        # certificate against this name too, not against the IP we connect to.
        extensions["sni_hostname"] = target.host.removesuffix(".")
    return httpx.Request(
        method,
        url.copy_with(host=str(target.address)),
        headers=sent,
        content=content,
        extensions=extensions,
    )


class _Pools:
    """Connection pools, one per (scheme, address, port, server name); idle LRU closed."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._pools: OrderedDict[tuple[object, ...], httpx.AsyncHTTPTransport] = OrderedDict()
        self._busy: Counter[tuple[object, ...]] = Counter()

    @contextlib.asynccontextmanager
    async def lease(self, request: httpx.Request) -> AsyncIterator[httpx.AsyncHTTPTransport]:
        url = request.url
        key = (url.scheme, url.host, url.port, request.extensions.get("sni_hostname"))
        pool = self._pools.get(key)
        if pool is None:
            # trust_env=False: an HTTPS_PROXY would connect to the name, not our address.
            pool = httpx.AsyncHTTPTransport(
                verify=self._context, trust_env=False, limits=_LIMITS, retries=0
            )
            self._pools[key] = pool
        self._pools.move_to_end(key)
        self._busy[key] += 1
        try:
            yield pool
        finally:
            self._busy[key] -= 1
            await self._evict()

    async def _evict(self) -> None:
        idle = [key for key in self._pools if not self._busy[key]]
        for key in idle[: max(0, len(self._pools) - _MAX_POOLS)]:
            del self._busy[key]
            await self._pools.pop(key).aclose()

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            await pool.aclose()


class EgressClient:
    """Checked, pinned, bounded outbound HTTP under one policy; reuses connections.

    Use as ``async with EgressClient(policy) as client:`` or call :meth:`close`.

    Raises:
        ConfigError: the policy's CA file cannot be loaded.
    """

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self._pools = _Pools(ssl_context(policy.ca_file))

    async def check_url(self, url: str) -> Target:
        """:func:`check_url` under this client's policy."""
        return await check_url(url, self.policy)

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> EgressResponse:
        """Check ``url`` now, connect to the address checked, and return the response.

        A caller's ``Host``, ``Content-Length`` and ``Transfer-Encoding`` headers are
        replaced. Redirects come back as responses.

        Raises:
            EgressRefused: the destination is not allowed.
            EgressUnavailable: DNS, connection, TLS or protocol failure, or a timeout.
        """
        target = await check_url(url, self.policy)
        pinned = _pinned_request(method.upper(), target, content, headers, self.policy)
        try:
            async with (
                asyncio.timeout(self.policy.total_timeout),
                self._pools.lease(pinned) as pool,
            ):
                response = await pool.handle_async_request(pinned)
                try:
                    body, truncated = await self._read(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            # from None: httpx errors carry the request, whose URL may hold a secret query.
            raise EgressUnavailable(_reason(exc), host=target.host) from None
        headers_out: dict[str, str] = {}
        for name, value in response.headers.multi_items():
            key = name.lower()
            headers_out[key] = f"{headers_out[key]}, {value}" if key in headers_out else value
        return EgressResponse(response.status_code, headers_out, body, truncated)

    async def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str] | None = None
    ) -> EgressResponse:
        """``POST`` ``content``; see :meth:`request`."""
        return await self.request("POST", url, content=content, headers=headers)

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        cap = self.policy.max_response_bytes
        body = bytearray()
        # aiter_raw is an async generator; typed as an iterator, hence the cast for aclosing.
        raw = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
        async with contextlib.aclosing(raw) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > cap:  # stop reading: closing drops the connection
                    return bytes(body[:cap]), True
        return bytes(body), False

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._pools.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _caused_by(exc: BaseException, kind: type[_E]) -> _E | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


#: Transport failures by type, most specific first, as short URL-free reasons.
_REASONS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (httpx.ConnectTimeout, "connect timed out"),
    (httpx.TimeoutException, "timed out"),
    (TimeoutError, "timed out"),
    (httpx.ConnectError, "connection failed"),
    (httpx.RemoteProtocolError, "the server broke the HTTP protocol"),
    (httpx.LocalProtocolError, "the request is not valid HTTP"),
)


def _reason(exc: BaseException) -> str:
    """A short, URL-free description of a transport failure."""
    verify = _caused_by(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        return f"TLS certificate verification failed ({verify.verify_message})"
    if _caused_by(exc, ssl.SSLError) is not None and not isinstance(exc, httpx.TimeoutException):
        return "TLS handshake failed"
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), "connection error")


async def request(
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    policy: EgressPolicy,
) -> EgressResponse:
    """One request on a fresh :class:`EgressClient` (channels keep a client to reuse it)."""
    async with EgressClient(policy) as client:
        return await client.request(method, url, content=content, headers=headers)


async def post(
    url: str, *, content: bytes, headers: Mapping[str, str], policy: EgressPolicy
) -> EgressResponse:
    """``POST`` on a fresh :class:`EgressClient`; see :meth:`EgressClient.request`."""
    return await request("POST", url, content=content, headers=headers, policy=policy)
