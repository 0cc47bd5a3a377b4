"""Which network addresses an image URL may reach: public ones only, unless the operator allows
private ones (--allow-private-image-urls). A URL from a request must not become a way into the
server's own network (SSRF): loopback, RFC 1918 and ULA ranges, link-local (cloud metadata at
169.254.169.254), carrier-grade NAT, and the rest of the reserved space."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unwrapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (::ffff:127.0.0.1, 6to4, Teredo): judged as that."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return embedded
        if address.teredo is not None:
            return address.teredo[1]
    return address


def refusal(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why `address` may not be fetched from, or None when it may."""
    address = _unwrapped(address)
    # Never a server to fetch from, whoever allows what.
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if allow_private:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None
