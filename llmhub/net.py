"""URL safety for addresses the server itself will call (external engines, AI raters, webhooks).

A URL a user types is fetched by LLMHub's own processes, so it must not reach what only the
server can reach (server-side request forgery): loopback, private networks, link-local
addresses such as the cloud metadata service at 169.254.169.254. :func:`check_public_url`
resolves the host and checks every address it resolves to; ``LLMHUB_ALLOW_PRIVATE_URLS``
(on in development and in the tests) lets a local engine on 127.0.0.1 through.

A check at save time does not stop a host whose DNS answer changes later (DNS rebinding); the
callers that fetch repeat it where that matters.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

ALLOWED_SCHEMES = ("http", "https")


def _error(field: str, message: str) -> ValidationError:
    return ValidationError({field: message})


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def check_public_url(url: str, *, field: str) -> str:
    """``url`` stripped, if it is an http(s) URL whose host resolves only to public addresses;
    else a ValidationError naming ``field``.

    With ``settings.LLMHUB_ALLOW_PRIVATE_URLS`` private, loopback and link-local hosts are
    allowed (the host must still resolve).
    """
    url = (url or "").strip()
    if not url:
        raise _error(field, "Give a URL (http:// or https://).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _error(field, f"'{url[:200]}' is not a valid URL: {exc}.") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise _error(field, f"Only http:// and https:// URLs are allowed, not '{parts.scheme}:'.")
    host = parts.hostname
    if not host:
        raise _error(field, f"'{url[:200]}' names no host.")
    if parts.username or parts.password:
        raise _error(field, "Put credentials in the API key field, not in the URL.")
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError) as exc:
        raise _error(field, f"The host '{host}' cannot be resolved ({exc}).") from None
    if not addresses:
        raise _error(field, f"The host '{host}' resolves to no address.")
    if getattr(settings, "LLMHUB_ALLOW_PRIVATE_URLS", False):
        return url
    for raw in addresses:
        address = ipaddress.ip_address(raw.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
        if not _is_public(address):
            raise _error(
                field,
                f"The host '{host}' resolves to {address}, a private, loopback or link-local "
                "address; LLMHub only calls public addresses (set LLMHUB_ALLOW_PRIVATE_URLS "
                "to allow a private network).",
            )
    return url
