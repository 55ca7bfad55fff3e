"""The front's HTTP/1.1 client for multi-model-server on loopback: pooled keep-alive connections.

Written for one known peer (multi-model-server's Netty front end, which answers every request with a
``Content-Length`` or chunked body) rather than with a general client: a general client's
per-request work (URL handling, cookies, tracing, timers) cost about a millisecond a request on a
2-core machine, as much as everything else the front does.
"""

from __future__ import annotations

import asyncio


class UpstreamError(ConnectionError):
    """multi-model-server closed the connection or answered something that is not HTTP."""


class Upstream:
    def __init__(self, host: str, port: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) of the answer; raises ``UpstreamError`` or ``asyncio.TimeoutError``."""
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers]
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        # A pooled connection may have been closed by the server while idle: then once more on a new one.
        for attempt in range(2):
            reused = bool(self.idle)
            reader, writer = self.idle.pop() if reused else await self._connect()
            try:
                writer.write(message)
                return await asyncio.wait_for(self._answer(reader, writer), self.timeout_s)
            except (UpstreamError, ConnectionError, asyncio.IncompleteReadError) as e:
                writer.close()
                if not reused or attempt:
                    raise UpstreamError(f"multi-model-server closed the connection ({e or type(e).__name__})") from None
            except BaseException:
                writer.close()
                raise
        raise AssertionError("unreachable")

    async def _connect(self):
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            raise UpstreamError(f"cannot connect to multi-model-server on {self.host}:{self.port} ({e.strerror or e})") from None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise UpstreamError(f"not an HTTP answer: {status_line[:80]!r}")
        headers, length, chunked, close = [], None, False, parts[0] == b"HTTP/1.0"
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise UpstreamError("the answer ended inside its headers")
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip(), value.strip()
            lower = name.lower()
            if lower == "content-length":
                length = int(value)
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lower == "connection":
                close = value.lower() == "close"
            headers.append((name, value))
        if chunked:
            body = bytearray()
            while size := int((await reader.readline()).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            body = bytes(body)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body, close = await reader.read(), True
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(parts[1]), headers, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
