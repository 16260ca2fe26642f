"""The bytes both FakeDify servers put on the wire themselves: response heads and the stdlib-style
HTML error page for requests that never reach the handler (bad request line, unsupported method).
"""

from __future__ import annotations

import email.utils
import html
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler

SERVER = "FakeDify/0.1"
_REASONS = {code: short for code, (short, _) in BaseHTTPRequestHandler.responses.items()}
_REASONS[524] = "A Timeout Occurred"  # Cloudflare's, which Dify Cloud answers through
_EXPLAIN = {code: long for code, (_, long) in BaseHTTPRequestHandler.responses.items()}
#: The methods the handler serves; others get 501, as http.server answers a missing do_X.
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

_date_second = -1
_date_text = ""


def reason(status: int) -> str:
    return _REASONS.get(status, "")


def http_date() -> str:
    """The Date header value, formatted once per second (a fast server answers thousands in one)."""
    global _date_second, _date_text
    now = time.time()
    second = int(now)
    if second != _date_second:
        _date_text, _date_second = email.utils.formatdate(now, usegmt=True), second
    return _date_text


def head(status: int, headers: Mapping[str, str], phrase: str | None = None) -> bytes:
    """Status line (``phrase`` or the standard reason), Server, Date, then ``headers`` in order,
    and the blank line."""
    status_line = f"HTTP/1.1 {status} {reason(status) if phrase is None else phrase}"
    lines = [status_line, f"Server: {SERVER}", f"Date: {http_date()}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_page(status: int, message: str | None = None, body: bool = True) -> bytes:
    """What ``BaseHTTPRequestHandler.send_error`` sends: head (with Connection: close) and page
    (not for a HEAD request: ``body=False``)."""
    short = _REASONS.get(status, "???")
    content = BaseHTTPRequestHandler.error_message_format % {
        "code": status,
        "message": html.escape(message or short, quote=False),
        "explain": html.escape(_EXPLAIN.get(status, "???"), quote=False),
    }
    page = content.encode("utf-8", "replace")
    headers = {
        "Connection": "close",
        "Content-Type": BaseHTTPRequestHandler.error_content_type,
        "Content-Length": str(len(page)),
    }
    return head(status, headers, message or short) + (page if body else b"")
