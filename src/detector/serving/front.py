"""The serving port: ``GET /ping`` told truthfully, ``POST /invocations`` passed on to multi-model-server.

multi-model-server listens on a loopback port behind this front. The front

- answers ``/ping`` itself: 200 ``{"status": "Healthy"}`` only while at least one worker holds the
  loaded, warmed-up model; otherwise 503 with the reason (loading, worker restarting, load failed);
- answers a request that no worker can take with a JSON 503 at once, instead of queueing it inside
  multi-model-server until a worker has reloaded (or answering 500 "Worker died.");
- refuses a body above ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` with a JSON 413 before reading it;
- answers ``GET /execution-parameters`` (what a Batch Transform job asks a container for when the
  job does not set MaxConcurrentTransforms, BatchStrategy and MaxPayloadInMB itself);
- answers every other path with a JSON 404 (the model-management API is never on this port);
- passes everything else through unchanged, and rewrites multi-model-server's own error bodies
  into the ``{"error": message}`` shape that the handler's errors have.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

from aiohttp import web

from ..errors import DetectorError
from .upstream import Upstream, UpstreamError

logger = logging.getLogger("detector.serving")

JSON_TYPE = "application/json"
# Not forwarded in either direction: they describe one connection, not the message.
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length")
)


def json_response(status: int, document: dict, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(document).encode(), content_type=JSON_TYPE, headers=headers)


class Front:
    """An aiohttp server on the serving port in front of multi-model-server on ``upstream``.

    ``unavailable()`` returns ``None`` while a worker can answer, else the reason it cannot; it is
    asked on every ``/ping`` and every request, so it must be cheap."""

    def __init__(self, upstream_port: int, unavailable: Callable[[], str | None], max_payload_bytes: int, response_timeout_s: float,
                 execution_parameters: dict | None = None, payload_limit_name: str = "SAGEMAKER_MAX_PAYLOAD_IN_MB"):
        # multi-model-server answers a request that outlasts its response timeout itself (500).
        self.upstream = Upstream("127.0.0.1", upstream_port, response_timeout_s + 10)
        self.unavailable = unavailable
        self.max_payload_bytes = max_payload_bytes
        self.execution_parameters = execution_parameters
        self.payload_limit_name = payload_limit_name
        self.runner: web.AppRunner | None = None

    # -- requests -------------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        reason = self.unavailable()
        if reason is None:
            return json_response(200, {"status": "Healthy"})
        return json_response(503, {"status": "Unhealthy", "reason": reason})

    async def execution_parameters_answer(self, request: web.Request) -> web.Response:
        if self.execution_parameters is None:
            return await self.not_found(request)
        return json_response(200, self.execution_parameters)

    async def invocations(self, request: web.Request) -> web.StreamResponse:
        reason = self.unavailable()
        if reason is not None:
            return self.no_worker(reason)
        length = request.content_length
        if length is not None and length > self.max_payload_bytes:
            return self.too_large(f"request body is {length} bytes")
        body = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > self.max_payload_bytes:
                return self.too_large("request body is larger")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            status, answer_headers, data = await self.upstream.post("/invocations", bytes(body), headers)
        except (UpstreamError, asyncio.TimeoutError) as e:
            logger.warning("multi-model-server did not answer a request: %s", e or type(e).__name__)
            return self.no_worker(self.unavailable() or "the model server did not answer")
        answer_headers = [(k, v) for k, v in answer_headers if k.lower() not in HOP_BY_HOP]
        if status >= 400:
            return self.server_error(status, data, answer_headers)
        return web.Response(status=status, body=data, headers=answer_headers)

    async def not_found(self, request: web.Request) -> web.Response:
        return json_response(404, {"error": f"{request.method} {request.path}: not found; this port serves GET /ping and POST /invocations"})

    def no_worker(self, reason: str) -> web.Response:
        return json_response(503, {"error": f"no worker can take the request now: {reason}; retry shortly"}, {"Retry-After": "1"})

    def too_large(self, what: str) -> web.Response:
        limit = self.max_payload_bytes
        return json_response(413, {"error": f"{what}, above the limit of {limit} bytes ({self.payload_limit_name}={limit / 1048576:g})"})

    def server_error(self, status: int, data: bytes, headers: list) -> web.Response:
        """The handler's own errors pass unchanged; multi-model-server's get the same JSON shape."""
        try:
            document = json.loads(data)
        except ValueError:
            document = None
        if isinstance(document, dict) and "error" in document:
            return web.Response(status=status, body=data, headers=headers)
        message = document.get("message") if isinstance(document, dict) else data.decode(errors="replace").strip()
        if status >= 500:
            reason = self.unavailable()
            if reason is not None:  # the worker died under this request
                return self.no_worker(reason)
        logger.warning("multi-model-server answered %d: %s", status, message)
        return json_response(status, {"error": f"model server: {message or 'no message'}"})

    # -- lifetime -------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=self.max_payload_bytes)
        app.router.add_get("/ping", self.ping)
        app.router.add_post("/invocations", self.invocations)
        app.router.add_get("/execution-parameters", self.execution_parameters_answer)
        app.router.add_route("*", "/{path:.*}", self.not_found)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, host, port, reuse_address=True).start()
        except OSError as e:
            await self.runner.cleanup()
            raise DetectorError(f"cannot listen on {host}:{port} (SAGEMAKER_BIND_TO_PORT): {e.strerror or e}") from None

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.upstream.close()
