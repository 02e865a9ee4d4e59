"""The SSRF-guarded egress client: address checks, URL rules, and real TLS on loopback.

No traffic leaves loopback: public addresses are only checked, never connected to, and the
few DNS answers of third parties (a name resolving to a private address, a rebinding name)
come from a fake resolver patched in at ``egress._getaddrinfo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path

import pytest
import trustme

from herald.channels import egress
from herald.channels.egress import (
    BLOCKED_NETWORKS,
    EgressClient,
    EgressPolicy,
    EgressRefused,
    EgressUnavailable,
    check_address,
    check_url,
    parse_allow_list,
    post,
    request,
    resolve,
    validate_url,
)
from herald.config import load_settings
from herald.errors import BadRequest, ConfigError

LOOPBACK = (IPv4Network("127.0.0.0/8"),)
NO_ALLOW = EgressPolicy()

REFUSED_HOSTS = [
    "127.0.0.1",
    "localhost",
    "0.0.0.0",  # noqa: S104 - an address under test, not a bind
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.1",
    "0x7f000001",
    "127.0.0.1.",
    "1.2.3",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::]",
    "[::127.0.0.1]",
    "169.254.169.254",
    "[fd00:ec2::254]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "100.100.100.200",
    "198.18.0.1",
    "192.0.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "[fe80::1]",
    "[fc00::1]",
    "[2001:db8::1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "[ff02::1]",
    "[fe80::1%25eth0]",
    "%31%32%37.0.0.1",
]

PUBLIC = ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001:80b::200e"]


def fake_resolver(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]
) -> list[str]:
    """Answer ``host`` with the next list in ``answers[host]``; record the lookups."""
    lookups: list[str] = []

    async def getaddrinfo(host: str, port: int) -> list[str]:
        lookups.append(host)
        pending = answers[host]
        return pending.pop(0) if len(pending) > 1 else pending[0]

    monkeypatch.setattr(egress, "_getaddrinfo", getaddrinfo)
    return lookups


# -- address checks ------------------------------------------------------------------------


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_tricky_hosts_are_refused(host: str) -> None:
    with pytest.raises(EgressRefused) as caught:
        await check_url(f"https://{host}/hook", NO_ALLOW)
    assert caught.value.slug == "egress-refused"
    assert caught.value.status == 400
    if host != "localhost":  # the only one that needs DNS to be refused
        with pytest.raises(EgressRefused):
            validate_url(f"https://{host}/hook", NO_ALLOW)


async def test_a_name_resolving_to_a_private_address_is_refused_without_saying_which(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_resolver(monkeypatch, {"hooks.partner.example": [["10.0.0.5"]]})
    with pytest.raises(EgressRefused) as caught:
        await check_url("https://hooks.partner.example/x", NO_ALLOW)
    assert "10.0.0.5" not in str(caught.value)
    assert "hooks.partner.example" in str(caught.value)
    # Syntax alone cannot know; the send-time check does.
    assert validate_url("https://hooks.partner.example/x", NO_ALLOW)


async def test_one_private_answer_among_public_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_resolver(monkeypatch, {"mixed.example": [["93.184.216.34", "::ffff:192.168.0.1"]]})
    with pytest.raises(EgressRefused):
        await check_url("https://mixed.example/", NO_ALLOW)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    check_address(ip_address(address), NO_ALLOW)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo: client 127.0.0.1 (obfuscated)
        "169.254.169.254",
        "fd00:ec2::254",
    ],
)
def test_embedded_and_metadata_addresses_are_refused(address: str) -> None:
    with pytest.raises(EgressRefused):
        check_address(ip_address(address), NO_ALLOW)


def test_blocked_networks_are_exactly_the_referenced_list() -> None:
    assert {str(net) for net in BLOCKED_NETWORKS} == {
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::1/128",
        "::/128",
        "fe80::/10",
        "fc00::/7",
        "2001:db8::/32",
        "64:ff9b::/96",
        "2002::/16",
        "ff00::/8",
    }


def test_allow_list_opens_its_networks_only() -> None:
    policy = EgressPolicy(allow=(IPv4Network("10.1.0.0/16"), IPv6Network("fd00:1::/64")))
    check_address(ip_address("10.1.2.3"), policy)
    check_address(ip_address("::ffff:10.1.2.3"), policy)  # normalised first
    check_address(ip_address("fd00:1::5"), policy)
    for refused in ("10.2.0.1", "127.0.0.1", "fd00:2::1", "2002:a01:203::"):
        with pytest.raises(EgressRefused):
            check_address(ip_address(refused), policy)
    # Allow-listing the 6to4 prefix does not open what the relay would reach.
    sixtofour = EgressPolicy(allow=(IPv6Network("2002::/16"),))
    check_address(ip_address("2002:5db8:d822::1"), sixtofour)  # 93.184.216.34
    with pytest.raises(EgressRefused):
        check_address(ip_address("2002:7f00:1::"), sixtofour)


def test_egress_refused_is_a_documented_bad_request() -> None:
    assert issubclass(EgressRefused, BadRequest)
    assert EgressRefused("x").type_uri == "urn:herald:problem:egress-refused"
    assert EgressRefused.__doc__
    assert EgressUnavailable.__doc__


def test_public_names_are_exported() -> None:
    assert set(egress.__all__) == {
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
    }
    for name in egress.__all__:
        assert getattr(egress, name).__doc__ or name in {"IPAddress", "IPNetwork"}, name


# -- URL rules -----------------------------------------------------------------------------


async def test_a_public_https_url_yields_its_target_without_connecting() -> None:
    target = await check_url("https://[2606:4700::1111]:8443/p?q=1#frag", NO_ALLOW)
    assert target.address == ip_address("2606:4700::1111")
    assert target.port == 8443
    assert target.host == "2606:4700::1111"
    assert target.url == "https://[2606:4700::1111]:8443/p?q=1"
    assert target.scheme == "https"
    target = await check_url("https://93.184.216.34/", NO_ALLOW)
    assert target.port == 443


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("http://93.184.216.34/", "https"),
        ("ftp://93.184.216.34/", "https"),
        ("file:///etc/passwd", "https"),
        ("https://user:pw@93.184.216.34/", "credentials"),
        ("https://user@93.184.216.34/", "credentials"),
        ("https://:@93.184.216.34/", "credentials"),
        ("https://@93.184.216.34/", "credentials"),
        ("https://93.184.216.34:0/", "port"),
        ("https://93.184.216.34:65536/", "port"),
        ("https://0177.0.0.1/", "ambiguous IP literal"),
        ("https:///path", "host"),
        ("https://exa mple.com/", ""),
        ("https://ex_ample..com/", "host name"),
    ],
)
async def test_url_rules(url: str, detail: str) -> None:
    with pytest.raises(EgressRefused) as caught:
        await check_url(url, NO_ALLOW)
    assert detail in str(caught.value)


async def test_http_to_a_public_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, {"example.com": [["93.184.216.34"]]})
    with pytest.raises(EgressRefused, match="https"):
        await check_url("http://example.com/", NO_ALLOW)
    assert (await check_url("https://example.com/", NO_ALLOW)).address == ip_address(
        "93.184.216.34"
    )


async def test_http_is_allowed_only_when_every_address_is_allow_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = EgressPolicy(allow=(IPv4Network("10.0.0.0/8"),))
    fake_resolver(
        monkeypatch, {"intranet.test": [["10.0.0.7"]], "half.test": [["10.0.0.7", "1.1.1.1"]]}
    )
    assert (await check_url("http://intranet.test/", policy)).address == ip_address("10.0.0.7")
    with pytest.raises(EgressRefused):
        await check_url("http://half.test/", policy)


async def test_resolve_parses_literals_and_normalises_mapped_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await resolve("[::ffff:1.2.3.4]", 443) == [ip_address("1.2.3.4")]
    assert await resolve("1.2.3.4", 443) == [ip_address("1.2.3.4")]
    fake_resolver(monkeypatch, {"dup.test": [["::ffff:1.1.1.1", "1.1.1.1", "2606:4700::1111"]]})
    assert await resolve("dup.test", 443) == [ip_address("1.1.1.1"), ip_address("2606:4700::1111")]


async def test_unresolvable_and_slow_names_are_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def fails(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(egress, "_getaddrinfo", fails)
    with pytest.raises(EgressUnavailable, match="does not resolve"):
        await resolve("nowhere.test", 443)

    async def hangs(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        return []

    monkeypatch.setattr(egress, "_getaddrinfo", hangs)
    with pytest.raises(EgressUnavailable, match="timed out"):
        await resolve("slow.test", 443, dns_timeout=0.05)


# -- policy from settings ------------------------------------------------------------------


def test_policy_from_settings(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = load_settings(
        egress_allow=" 10.1.0.0/16, fd00:1::/64,,::ffff:192.168.0.0/120 ", egress_ca_file=ca_file
    )
    policy = EgressPolicy.from_settings(settings)
    assert policy.allow == (
        ip_network("10.1.0.0/16"),
        ip_network("fd00:1::/64"),
        ip_network("192.168.0.0/24"),
    )
    assert policy.ca_file == ca_file
    assert EgressPolicy.from_settings(load_settings()).allow == ()


@pytest.mark.parametrize("value", ["10.0.0.1/8", "not-a-net", "10.0.0.0/33", "::ffff:0:0/64"])
def test_invalid_allow_list_names_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="HERALD_EGRESS_ALLOW"):
        parse_allow_list(value)


def test_bad_ca_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HERALD_EGRESS_CA_FILE"):
        EgressPolicy.from_settings(load_settings(egress_ca_file=tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="HERALD_EGRESS_CA_FILE"):
        EgressClient(EgressPolicy(ca_file=junk))


def test_the_extra_ca_is_trusted_alongside_the_system_store(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    combined = egress.ssl_context(ca_file)
    base = egress.ssl_context(None)
    assert combined.cert_store_stats()["x509_ca"] == base.cert_store_stats()["x509_ca"] + 1
    assert combined.minimum_version == ssl.TLSVersion.TLSv1_2
    assert combined.verify_mode == ssl.CERT_REQUIRED
    assert combined.check_hostname


# -- real servers on loopback --------------------------------------------------------------


@dataclass
class Seen:
    """What a test server observed."""

    sni: list[str | None] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    local: list[str] = field(default_factory=list)
    connections: int = 0


@dataclass
class Server:
    port: int
    seen: Seen
    ca_file: Path


Responder = Callable[[str], Awaitable[bytes]]


async def _respond(path: str, port: int) -> bytes:
    if path.startswith("/redirect"):
        return (
            b"HTTP/1.1 302 Found\r\n"
            + f"Location: https://localhost:{port}/landed\r\n".encode()
            + b"Content-Length: 0\r\n\r\n"
        )
    if path == "/big":
        body = b"x" * 200_000
    elif path == "/gzip":
        body = b"\x1f\x8b" + b"\0" * 100_000
    elif path == "/hang":
        await asyncio.Event().wait()
        body = b""
    else:
        body = b'{"ok": true}'
    extra = b"Content-Encoding: gzip\r\n" if path == "/gzip" else b""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\n" + extra + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, names: list[str], *, tls: bool = True) -> AsyncIterator[Server]:
    """An HTTP/1.1 (over TLS unless ``tls=False``) server on 127.0.0.1 with a trustme cert."""
    ca = trustme.CA()
    ca_file = tmp_path / f"ca-{'-'.join(names)}.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    seen = Seen()
    context: ssl.SSLContext | None = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)

        def remember(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            seen.sni.append(name)

        context.sni_callback = remember  # type: ignore[assignment]
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []
    port = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.append(writer)
        seen.connections += 1
        seen.local.append(writer.get_extra_info("sockname")[0])
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *lines = head.split("\r\n")
                method, path, _ = line.split(" ", 2)
                headers = {
                    key.strip().lower(): value.strip()
                    for key, value in (item.split(":", 1) for item in lines if item)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen.requests.append((method, path, headers, body))
                writer.write(await _respond(path, port))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Server(port, seen, ca_file)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
def loopback_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve ``localhost`` for real, keeping only IPv4 answers (the server is IPv4)."""
    real = egress._getaddrinfo

    async def ipv4_only(host: str, port: int) -> list[str]:
        return [a for a in await real(host, port) if ":" not in a]

    monkeypatch.setattr(egress, "_getaddrinfo", ipv4_only)


@pytest.mark.usefixtures("loopback_localhost")
async def test_https_to_localhost_connects_to_the_address_with_sni(tmp_path: Path) -> None:
    async with serve(tmp_path, ["localhost"]) as server:
        policy = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file)
        response = await post(
            f"https://localhost:{server.port}/hook?token=t",
            content=b'{"a": 1}',
            headers={
                "Content-Type": "application/json",
                "Host": "evil.example",
                "Content-Length": "1",
            },
            policy=policy,
        )
    assert response.status == 200
    assert response.body == b'{"ok": true}'
    assert not response.truncated
    assert response.headers["content-type"] == "application/json"
    assert response.headers["set-cookie"] == "a=1, b=2"
    assert server.seen.sni == ["localhost"]
    assert server.seen.local == ["127.0.0.1"]
    [(method, path, headers, body)] = server.seen.requests
    assert (method, path, body) == ("POST", "/hook?token=t", b'{"a": 1}')
    assert headers["host"] == f"localhost:{server.port}"
    assert headers["accept-encoding"] == "identity"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == "8"


async def test_the_connection_goes_to_the_checked_address_not_a_new_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hooks.herald.test exists only in this fake resolver: the request reaches 127.0.0.1
    # because that is the address checked, and TLS still verifies the name.
    lookups = fake_resolver(monkeypatch, {"hooks.herald.test": [["127.0.0.1"]]})
    async with serve(tmp_path, ["hooks.herald.test"]) as server:
        policy = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file)
        response = await request("GET", f"https://hooks.herald.test:{server.port}/", policy=policy)
    assert response.status == 200
    assert lookups == ["hooks.herald.test"]  # resolved once
    assert server.seen.sni == ["hooks.herald.test"]
    assert server.seen.requests[0][2]["host"] == f"hooks.herald.test:{server.port}"


async def test_dns_rebinding_is_caught_at_send_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, {"rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})
    await check_url("https://rebind.test/", NO_ALLOW)  # saved while public
    with pytest.raises(EgressRefused):
        await post("https://rebind.test/", content=b"{}", headers={}, policy=NO_ALLOW)


@pytest.mark.usefixtures("loopback_localhost")
async def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path, ["other.example"]) as server:
        policy = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file)
        with pytest.raises(EgressUnavailable) as caught:
            await post(f"https://localhost:{server.port}/", content=b"", headers={}, policy=policy)
    assert "certificate verification failed" in caught.value.reason
    assert server.seen.requests == []


@pytest.mark.usefixtures("loopback_localhost")
async def test_an_untrusted_ca_is_refused(tmp_path: Path) -> None:
    async with serve(tmp_path, ["localhost"]) as server:
        policy = EgressPolicy(allow=LOOPBACK)  # system store only
        with pytest.raises(EgressUnavailable, match="certificate verification failed"):
            await post(f"https://localhost:{server.port}/", content=b"", headers={}, policy=policy)


@pytest.mark.usefixtures("loopback_localhost")
async def test_redirects_are_returned_not_followed(tmp_path: Path) -> None:
    async with serve(tmp_path, ["localhost"]) as server:
        policy = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file)
        response = await post(
            f"https://localhost:{server.port}/redirect", content=b"", headers={}, policy=policy
        )
    assert response.status == 302
    assert response.headers["location"] == f"https://localhost:{server.port}/landed"
    assert [path for _, path, _, _ in server.seen.requests] == ["/redirect"]


@pytest.mark.usefixtures("loopback_localhost")
async def test_large_and_compressed_responses_are_capped(tmp_path: Path) -> None:
    async with serve(tmp_path, ["localhost"]) as server:
        policy = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file)
        async with EgressClient(policy) as client:
            big = await client.request("GET", f"https://localhost:{server.port}/big")
            gz = await client.request("GET", f"https://localhost:{server.port}/gzip")
            small = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file, max_response_bytes=12)
            exact = await request("GET", f"https://localhost:{server.port}/", policy=small)
    assert big.truncated
    assert big.body == b"x" * (64 * 1024)
    assert gz.truncated  # raw bytes, never decompressed
    assert len(gz.body) == 64 * 1024
    assert gz.headers["content-encoding"] == "gzip"
    assert (exact.body, exact.truncated) == (b'{"ok": true}', False)


async def test_connections_are_reused_per_name_but_never_across_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_resolver(monkeypatch, {"a.herald.test": [["127.0.0.1"]], "b.herald.test": [["127.0.0.1"]]})
    async with serve(tmp_path, ["a.herald.test", "b.herald.test"]) as server:
        policy = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file)
        async with EgressClient(policy) as client:
            for name in ("a", "a", "b", "a"):
                response = await client.request("GET", f"https://{name}.herald.test:{server.port}/")
                assert response.status == 200
    assert server.seen.connections == 2
    assert server.seen.sni == ["a.herald.test", "b.herald.test"]
    assert [h["host"].split(":")[0] for _, _, h, _ in server.seen.requests] == [
        "a.herald.test",
        "a.herald.test",
        "b.herald.test",
        "a.herald.test",
    ]


@pytest.mark.timeout(10)
async def test_a_server_that_never_answers_hits_the_read_timeout(tmp_path: Path) -> None:
    async with serve(tmp_path, ["127.0.0.1"]) as server:
        policy = EgressPolicy(allow=LOOPBACK, ca_file=server.ca_file, read_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(EgressUnavailable) as caught:
            await post(
                f"https://127.0.0.1:{server.port}/hang", content=b"", headers={}, policy=policy
            )
        elapsed = time.monotonic() - started
    assert caught.value.reason == "timed out"
    assert 0.4 < elapsed < 3
    assert server.seen.sni == [None]  # an IP literal sends no SNI; the IP SAN is verified


@pytest.mark.timeout(10)
async def test_the_total_timeout_bounds_a_whole_exchange(tmp_path: Path) -> None:
    async with serve(tmp_path, ["127.0.0.1"], tls=False) as server:
        policy = EgressPolicy(allow=LOOPBACK, total_timeout=0.3, read_timeout=5)
        with pytest.raises(EgressUnavailable, match="timed out"):
            await post(
                f"http://127.0.0.1:{server.port}/hang", content=b"", headers={}, policy=policy
            )


async def test_plain_http_to_an_allow_listed_address(tmp_path: Path) -> None:
    async with serve(tmp_path, ["127.0.0.1"], tls=False) as server:
        policy = EgressPolicy(allow=LOOPBACK)
        response = await post(
            f"http://127.0.0.1:{server.port}/x", content=b"hi", headers={}, policy=policy
        )
    assert response.status == 200
    assert server.seen.requests[0][2]["host"] == f"127.0.0.1:{server.port}"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_closed_port_is_unavailable_and_messages_leak_nothing() -> None:
    policy = EgressPolicy(allow=LOOPBACK)
    url = f"https://127.0.0.1:{_closed_port()}/secret-path?token=s3cret"
    with pytest.raises(EgressUnavailable) as caught:
        await post(url, content=b"", headers={}, policy=policy)
    assert caught.value.reason == "connection failed"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    for leaked in ("s3cret", "token", "secret-path"):
        assert leaked not in str(caught.value)


async def test_refusals_do_not_echo_credentials_or_queries() -> None:
    with pytest.raises(EgressRefused) as caught:
        await post(
            "https://admin:hunter2@93.184.216.34/p?token=s3cret",
            content=b"",
            headers={},
            policy=NO_ALLOW,
        )
    for leaked in ("hunter2", "admin", "s3cret", "token"):
        assert leaked not in str(caught.value)
