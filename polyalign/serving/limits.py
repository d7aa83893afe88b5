"""The bounds of a server (request size, values per request, k, batches) and the gate every
request passes first: the bearer token, the body size limit, and the metrics of its answer."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .metrics import ServeMetrics

PUBLIC_PATHS = frozenset({"/health", "/", "/page.js", "/page.css"})  # no data: the page asks for the token


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how requests are batched."""

    max_body_mb: float = 16.0
    max_values: int = 64
    max_k: int = 100
    max_batch: int = 64
    batch_wait_ms: float = 2.0
    max_decoded_millions: float = 200.0  # numbers the uploads of one request decode to, from their headers

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted, in bytes."""
        return int(self.max_body_mb * 1024 * 1024)


class BodyTooLarge(Exception):
    """A request body grew past the limit while it was read."""


async def _send_json(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """ASGI middleware: checks the bearer token, bounds the body, and records each answer's metrics."""

    def __init__(self, app: Any, limits: Limits, metrics: ServeMetrics, token: str | None):
        self.app, self.limits, self.metrics = app, limits, metrics
        self.expected = f"Bearer {token}".encode() if token else None

    def _too_large(self) -> str:
        return (f"the request body is larger than the limit of {self.limits.max_body_mb:g} MB "
                f"(polyalign serve --max-body-mb)")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, sending)
        finally:
            route = scope.get("route")
            self.metrics.answered(getattr(route, "path", "unmatched"), status[0], time.perf_counter() - start)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"] not in PUBLIC_PATHS:
            given = headers.get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                await _send_json(send, 401, "missing or wrong bearer token: send the header 'Authorization: "
                                            "Bearer TOKEN' with the token the server was started with",
                                 [(b"www-authenticate", b"Bearer")])
                return
        limit = self.limits.max_body_bytes
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > limit:
            await _send_json(send, 413, self._too_large())
            return
        seen = [0]

        async def receiving() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise BodyTooLarge(self._too_large())
            return message

        await self.app(scope, receiving, send)
