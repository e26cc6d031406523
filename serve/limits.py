"""Request-body limits, enforced before anything parses the body.

:class:`BodyLimit` is a plain ASGI middleware. A request whose ``Content-Length`` is over the limit
is answered 413 without parsing; a request without one (chunked) has its bytes counted as they
are read and is answered 413 as soon as the count passes the limit. In both cases the rest of the
body is read and thrown away first (up to :data:`DRAIN_CAP` bytes), so that a client still
sending gets the 413 instead of a reset connection.
"""
from __future__ import annotations

import json

from starlette.exceptions import HTTPException

DRAIN_CAP = 64 << 20  # bytes read and discarded at most after a limit is hit


class BodyTooLarge(HTTPException):
    """Raised while reading a body that passes its limit (HTTP 413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body too large: the limit is {limit} bytes")


async def _drain(receive, cap: int = DRAIN_CAP) -> None:
    seen = 0
    while seen <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def json_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: ``limit_for(path)`` bytes at most in the body of a POST, PUT or PATCH."""

    def __init__(self, app, limit_for):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a route prefix: limits are per app route
            path = path[len(root):]
        limit = int(self.limit_for(path))
        length = None
        for name, value in scope.get("headers") or []:
            if name.lower() == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _drain(receive)
                    return await json_error(send, 400, f"bad Content-Length header {value[:40]!r}")
        if length is not None and length > limit:
            await _drain(receive)
            return await json_error(send, 413, f"request body too large: {length} bytes, the limit is {limit} bytes")

        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)
