"""Images in chat messages: which URLs may reach an engine.

A data URL carries the image itself: it must say it is a PNG, JPEG, GIF or WebP in base64,
and be at most `max_image_bytes` once decoded (measured from its length here; its base64
is decoded later, off the event loop, by `checks.request_parts`).

An http(s) URL is fetched by the engine, from inside the cluster: passing any URL on would
let every caller make the cluster fetch metadata endpoints and internal services. So only
hosts on the allow-list pass, by exact name, and an IP literal that points inside (loopback,
private, link-local such as 169.254.169.254, unique-local, unspecified) is refused even if
someone listed it. The URL must also be plain (no user info, spaces or backslashes), so that
the engine's URL parser cannot read a different host than ours.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from switchyard.edge.checks import IMAGE_DATA_URL
from switchyard.edge.errors import OpenAIError

#: What a plain http(s) URL is made of (RFC 3986's unreserved, reserved and percent signs).
_PLAIN_URL = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]!$&'()*+,;=%]+$")


@dataclass(frozen=True, slots=True)
class ImageRules:
    max_images: int
    max_image_bytes: int
    url_hosts: frozenset[str]


def decoded_size(data: str, start: int = 0) -> int:
    """The size of the base64 in `data[start:]` once decoded (exact for valid base64).
    Counted in place: an image may be megabytes, and this runs on the event loop."""
    padding = 0
    while padding < 2 and len(data) - padding > start and data[-1 - padding] == "=":
        padding += 1
    return (len(data) - start) * 3 // 4 - padding


def check_image_url(url: str, param: str, rules: ImageRules) -> None:
    """Raise a 400 unless `url` may be passed to an engine (cheap: no decoding)."""
    if url[:5].lower() == "data:":
        head = IMAGE_DATA_URL.match(url)
        if head is None:
            raise OpenAIError.invalid(
                f"{param}: an image data URL must start with "
                "data:image/<png|jpeg|gif|webp>;base64,",
                param,
                "invalid_image_url",
            )
        size = decoded_size(url, head.end())
        if size > rules.max_image_bytes:
            raise OpenAIError.invalid(
                f"{param}: the image is {size} bytes; the limit is {rules.max_image_bytes} bytes",
                param,
                "image_too_large",
            )
        return
    _check_remote(url, param, rules.url_hosts)


def _check_remote(url: str, param: str, hosts: frozenset[str]) -> None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise OpenAIError.invalid(f"{param}: not a valid URL", param, "invalid_image_url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise OpenAIError.invalid(
            f"{param}: images must be data URLs (data:image/...;base64,...) or http(s) URLs",
            param,
            "invalid_image_url",
        )
    if not _PLAIN_URL.match(url) or "@" in parts.netloc or not host:
        raise OpenAIError.invalid(f"{param}: not a plain http(s) URL", param, "invalid_image_url")
    if host not in hosts or _internal_address(host):
        raise OpenAIError.invalid(
            f"{param}: image URLs from host '{host}' are not allowed; send the image as a "
            "data URL (data:image/png;base64,...)",
            param,
            "image_url_not_allowed",
        )


def _internal_address(host: str) -> bool:
    """Whether `host` is an IP literal that reaches inside (never allowed, listed or not)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: only the allow-list decides
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_private covers 10/8, 172.16/12, 192.168/16, fc00::/7 (unique-local) and more;
    # 169.254.169.254, the cloud metadata address, is link-local.
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
    )
