"""Network settings taken from the environment, read the way ``requests`` reads them.

Users' workers are configured for ``requests`` (Airflow's own HTTP stack): ``HTTP(S)_PROXY``,
``ALL_PROXY``, ``NO_PROXY`` (host suffixes, ``*``, CIDR ranges) and ``REQUESTS_CA_BUNDLE`` /
``CURL_CA_BUNDLE``. Honouring the same variables means moving to our own transport changes
nothing for them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import ssl
import urllib.request
from urllib.parse import urlsplit

import certifi
from urllib3.util.ssl_ import create_urllib3_context

from airflow_dify.client.errors import DifyConfigError


def proxy_for(url: str) -> str | None:
    """The proxy URL to use for ``url``, or None to connect directly."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    proxies = urllib.request.getproxies()
    port = parts.port or (443 if scheme == "https" else 80)
    if _bypass(parts.hostname or "", port, proxies.get("no", "")):
        return None
    return proxies.get(scheme) or proxies.get("all") or None


SOCKS_UNSUPPORTED = (
    "a SOCKS proxy is configured (ALL_PROXY/HTTP_PROXY/HTTPS_PROXY) for the Dify URL: the batch "
    "engine supports HTTP(S) proxies only; point HTTPS_PROXY at an HTTP proxy, or list the Dify "
    "host in NO_PROXY"
)


def is_socks(proxy: str | None) -> bool:
    """Whether a proxy URL is a SOCKS one (socks4, socks5, socks5h...)."""
    return proxy is not None and proxy.lower().startswith("socks")


def socks_proxy_for(url: str) -> str | None:
    """The SOCKS proxy the environment sets for ``url`` (the batch engine cannot use one), if any."""
    proxy = proxy_for(url)
    return proxy if is_socks(proxy) else None


def _bypass(host: str, port: int, no_proxy: str) -> bool:
    """NO_PROXY as requests reads it: ``*``; host suffixes, matched as plain suffixes like requests
    does (``dify.ai`` and ``.dify.ai`` both cover ``api.dify.ai``); IP addresses exactly or by CIDR
    range; any entry may add ``:port``, compared with the URL's port (default 80/443)."""
    host = host.lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        head, sep, tail = entry.rpartition(":")
        if sep and tail.isdigit() and ":" not in head:  # "host:port"; "::1" is an address
            if int(tail) != port:
                continue
            entry = head
        name = entry.lstrip(".")
        if not name:
            continue
        if address is None:
            if host.endswith(name):
                return True
        elif _in_network(address, name):
            return True
    return False


def _in_network(address: ipaddress.IPv4Address | ipaddress.IPv6Address, entry: str) -> bool:
    try:
        return address in ipaddress.ip_network(entry, strict=False)  # a bare address is a /32
    except ValueError:
        return False


def ca_bundle() -> tuple[str, str]:
    """``(path, where it came from)``: the CA file or directory that verifies TLS servers."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        path = os.environ.get(name)
        if path:
            return path, name
    return certifi.where(), "certifi"


def ssl_context(verify: bool) -> ssl.SSLContext:
    """One shared context per setting: loading a CA bundle costs ~20 ms, too much per connection."""
    if not verify:
        return _context(False, "", "")
    return _context(True, *ca_bundle())


@functools.lru_cache(maxsize=8)
def _context(verify: bool, path: str, source: str) -> ssl.SSLContext:
    if not verify:
        return create_urllib3_context(cert_reqs=ssl.CERT_NONE)
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    try:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise DifyConfigError(
            f"cannot load the TLS CA bundle {path!r} (from {source}): {exc}; point it at a PEM file "
            "or unset it"
        ) from None
    return context


__all__ = ["SOCKS_UNSUPPORTED", "ca_bundle", "is_socks", "proxy_for", "socks_proxy_for", "ssl_context"]
