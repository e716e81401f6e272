"""What the demo answers: requests for its own address from its own page, with bodies of a bounded size.

A server on 127.0.0.1 is still reachable from any web page the user opens: a page can POST to it (a `text/plain`
body needs no permission), and a page whose own domain name is made to resolve to 127.0.0.1 (DNS rebinding) reads
its answers too. Both carry a foreign name: the rebinding page in `Host`, a cross-site POST in `Origin`. So a
request is answered only when its Host names the address the demo is bound to (or localhost, when that is where it
is bound) at its port, and its Origin, when the browser sends one, is that same address. A body is read only up to
its route's limit, whether or not the request declares a length, so a chunked upload without one cannot fill the
memory either.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from isegprobe.units import human_bytes

_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?", re.IGNORECASE)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


class BodyLimit(NamedTuple):
    """At most `size` bytes; the message for more says what the body is (`what`) and names it by the query
    parameter `named_by` when the request has one (an upload's file name), else by its path."""

    size: int
    what: str
    named_by: str | None = None


class DemoAddress:
    """The address the demo is bound to, and the Host and Origin values that name it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host.strip("[]").lower(), port
        if self.host in WILDCARD_ADDRESSES:
            # Bound to every interface: the machine's addresses cannot be listed, but a rebinding page always
            # names a domain, so any IP address is the demo's own, as are localhost and the machine's name.
            self.names = LOOPBACK_NAMES | {socket.gethostname().lower()}
        elif self.host in LOOPBACK_NAMES or _is_loopback(self.host):
            self.names = LOOPBACK_NAMES | {self.host}
        else:
            self.names = frozenset({self.host})

    def url(self) -> str:
        """The page's address as a browser takes it: an IPv6 address in brackets (http://[::1]:8765)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def expected(self) -> str:
        """The Host values answered, for messages."""
        names = sorted(self.names) + (["any IP address"] if self.host in WILDCARD_ADDRESSES else [])
        return " or ".join(names) + f", port {self.port}"

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these Host and Origin headers is not answered; None when it is."""
        named = _name_and_port(host or "")
        if named is None or not self._is_own(*named):
            return f"Host {host!r} refused: the demo answers requests for {self.expected()} only"
        if origin is not None and (not origin.startswith("http://") or _name_and_port(origin[7:]) != named):
            return f"a request from {origin!r} refused: the demo answers its own page (http://{host}) only"
        return None

    def _is_own(self, name: str, port: int) -> bool:
        if port != self.port:
            return False
        return name in self.names or (self.host in WILDCARD_ADDRESSES and _is_ip_address(name))


class RequestGuard:
    """ASGI middleware: 403 for a request from elsewhere than the demo's own address and page (see the module
    docstring), 413 for a body over its route's limit, declared or streamed."""

    def __init__(self, app: ASGIApp, address: DemoAddress, limits: Mapping[str, BodyLimit], default: BodyLimit) -> None:
        self.app, self.address, self.limits, self.default = app, address, limits, default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.address.refusal(headers.get("host"), headers.get("origin"))
        if refusal is not None:
            await JSONResponse({"detail": refusal}, status_code=403)(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        subject = scope["path"]
        if limit.named_by is not None:
            subject = parse_qs(scope["query_string"].decode("latin-1")).get(limit.named_by, [subject])[0]
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit.size:
            detail = _too_large(subject, limit, int(declared))
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        await self.app(scope, _limited(receive, limit, subject), send)


def _limited(receive: Receive, limit: BodyLimit, subject: str) -> Receive:
    """`receive` that stops the request with a 413 as soon as its body passes the limit, before the rest arrives."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit.size:
            raise HTTPException(status_code=413, detail=_too_large(subject, limit, None))
        return message

    return receive_within_limit


def _too_large(subject: str, limit: BodyLimit, declared: int | None) -> str:
    """The 413 message: the declared size, or where no length was declared, that reading stopped at the limit."""
    allowed = f"more than the {human_bytes(limit.size)} {limit.what} may have"
    if declared is None:
        return f"{subject}: {allowed} (stopped reading there)"
    return f"{subject}: {human_bytes(declared)}, {allowed}"


def _name_and_port(value: str) -> tuple[str, int] | None:
    """Name (lower case, without IPv6 brackets or a trailing dot) and port (80 when absent) of a Host header or of
    an origin without its scheme; None for anything else."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    return match["name"].strip("[]").rstrip(".").lower(), int(match["port"] or 80)


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    return _is_ip_address(name) and ipaddress.ip_address(name).is_loopback
