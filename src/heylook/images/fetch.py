"""Image URLs fetched under a policy: http(s) only; the host resolved here and every address it
resolves to checked (addresses.refusal) before connecting to the checked address itself, so a
name that resolves to 127.0.0.1 (or is re-pointed there between a check and the connection: DNS
rebinding) reaches nothing inside; redirects few and each checked the same way; the body bounded
in bytes, and the whole fetch in time (a server that trickles its bytes is cut off)."""

from __future__ import annotations

import ipaddress
import socket

import anyio
import httpx

from heylook.errors import InvalidRequest
from heylook.images.addresses import IPAddress, refusal
from heylook.images.decode import MAX_IMAGE_BYTES

MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0  # between two pieces of the body
TOTAL_TIMEOUT = 30.0  # for the whole fetch, redirects included
_REDIRECTS = (301, 302, 303, 307, 308)


def image_client() -> httpx.AsyncClient:
    """A client for image fetches: no redirects of its own (each is checked here), no proxies from
    the environment (they would connect to what was never checked), no compression (a small
    gzip body can unpack to gigabytes), no kept connections (one is pooled by address, and two
    names on one address must not share the TLS session one of them opened)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        limits=httpx.Limits(max_keepalive_connections=0),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "heylook", "Accept": "image/*", "Accept-Encoding": "identity"},
    )


async def fetch_image(client: httpx.AsyncClient, url: str, where: str, *, allow_private: bool) -> bytes:
    """The bytes at `url`; an InvalidRequest naming `where` when they cannot or may not be had."""
    try:
        with anyio.fail_after(TOTAL_TIMEOUT):
            for _ in range(MAX_REDIRECTS + 1):
                location = await _fetch_once(client, httpx.URL(url), where, allow_private)
                if isinstance(location, bytes):
                    return location
                url = location
            raise _failed(where, url, f"redirects more than {MAX_REDIRECTS} times")
    except TimeoutError:
        raise _failed(where, url, f"took longer than {TOTAL_TIMEOUT:g} s") from None
    except httpx.InvalidURL as error:
        raise _failed(where, url, f"is not a valid URL ({error})") from None
    except httpx.HTTPError as error:
        raise _failed(where, url, f"could not be fetched ({type(error).__name__}: {error})") from None


async def _fetch_once(
    client: httpx.AsyncClient, url: httpx.URL, where: str, allow_private: bool
) -> bytes | str:
    """The body, or where a redirect points."""
    if url.scheme not in ("http", "https"):
        raise _failed(where, str(url), "is not an http(s) URL")
    address = await _checked_address(url, where, allow_private)
    direct = url.copy_with(host=str(address))
    # The request goes to the address checked; Host and TLS (SNI, the certificate) keep the name.
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": _ascii_host(url)} if url.scheme == "https" else {}
    request = client.build_request("GET", direct, headers=headers, extensions=extensions)
    response = await client.send(request, stream=True)
    try:
        if response.status_code in _REDIRECTS and "location" in response.headers:
            return str(url.join(response.headers["location"]))
        if response.status_code != 200:
            raise _failed(where, str(url), f"answered HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
            raise _failed(where, str(url), f"is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        body = bytearray()
        async for piece in response.aiter_raw():
            body += piece
            if len(body) > MAX_IMAGE_BYTES:
                raise _failed(where, str(url), f"is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        return bytes(body)
    finally:
        await response.aclose()


async def _checked_address(url: httpx.URL, where: str, allow_private: bool) -> IPAddress:
    """The address to connect to: the host's, when every address it resolves to is allowed."""
    host = _ascii_host(url)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = await anyio.getaddrinfo(host, url.port or 443, type=socket.SOCK_STREAM)
        except OSError as error:
            raise _failed(where, str(url), f"names a host that does not resolve ({error})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found]
    if not addresses:
        raise _failed(where, str(url), "names a host that does not resolve")
    for address in addresses:
        why = refusal(address, allow_private=allow_private)
        if why is not None:
            hint = "" if allow_private else " (a server may allow it with --allow-private-image-urls)"
            raise _failed(where, str(url), f"reaches {address}, {why}: refused{hint}")
    return addresses[0]


def _ascii_host(url: httpx.URL) -> str:
    """The host as DNS and TLS take it: an international name in its xn-- form."""
    return url.raw_host.decode("ascii")


def _failed(where: str, url: str, why: str) -> InvalidRequest:
    shown = url if len(url) <= 100 else url[:97] + "..."
    return InvalidRequest(f"the image URL at '{where}' ({shown}) {why}", param=where or None)
