"""A fault-injecting HTTP proxy for tests: forwards to a real server, and on schedule breaks the exchange.

Faults: `drop` (close without a reply), `500`, `429` (with Retry-After), `slow` (no reply within the client's
timeout), `truncate` (close mid-body), `malformed` (a well-framed but broken JSON body). Requests whose body
contains a `reject_marker` get a 400, as a server would for a request it can never serve.
"""

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Sequence

import httpx

FAULTS = ("drop", "500", "429", "slow", "truncate", "malformed")
_REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway"}


class FaultProxy:
    """Listens on 127.0.0.1; the i-th request not rejected (from 0) gets fault `schedule[i]` unless it is None."""

    def __init__(self, upstream: str, schedule: Sequence[str | None] = (), reject_marker: str | None = None,
                 slow_seconds: float = 10.0, retry_after: float = 1.0):
        self.upstream = upstream.rstrip("/")
        self.schedule = list(schedule)
        self.reject_marker = reject_marker
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.strip_logprobs = False
        """While True, replies lose their logprobs, as from a server that does not compute them."""
        self.down = False
        """While True, every connection is closed at once, as if the server had died."""
        self.paused = False
        """While True, requests wait here before they are forwarded, as on a server that has stalled."""
        self.requests = 0
        self.bodies: list[bytes] = []
        """Every request body, as received."""
        self._scheduled = 0
        self.injected: Counter[str] = Counter()
        self.authorization: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fault-proxy")
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._http = httpx.AsyncClient(timeout=600)
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        try:
            while not self.down:
                request = await _read_request(reader)
                if request is None or self.down:
                    break
                if not await self._exchange(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(asyncio.current_task())

    def _fault_for(self, body: bytes) -> str | None:
        self.requests += 1
        if self.reject_marker and self.reject_marker.encode() in body:
            return "reject"
        index, self._scheduled = self._scheduled, self._scheduled + 1
        return self.schedule[index] if index < len(self.schedule) else None

    async def _exchange(self, request: tuple[str, str, dict[str, str], bytes], writer) -> bool:
        """Answer one request; False when the connection must close."""
        method, path, headers, body = request
        self.bodies.append(body)
        if "authorization" in headers:
            self.authorization.add(headers["authorization"])
        fault = self._fault_for(body)
        if fault:
            self.injected[fault] += 1
        if fault == "drop":
            return False
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
            return False
        if fault in ("500", "429", "reject"):
            status = {"500": 500, "429": 429, "reject": 400}[fault]
            extra = {"Retry-After": f"{self.retry_after:g}"} if fault == "429" else {}
            payload = json.dumps({"error": {"message": f"injected {fault}", "type": "fault_proxy"}}).encode()
            await _respond(writer, status, payload, extra)
            return True
        while self.paused:
            await asyncio.sleep(0.05)
        forwarded = {k: v for k, v in headers.items() if k in ("content-type", "authorization", "accept")}
        try:
            reply = await self._http.request(method, self.upstream + path, content=body, headers=forwarded)
        except httpx.HTTPError as err:  # e.g. a stale keep-alive connection upstream: a gateway's 502
            await _respond(writer, 502, json.dumps({"error": {"message": f"upstream: {err!r}"}}).encode())
            return True
        payload = _without_logprobs(reply.content) if self.strip_logprobs else reply.content
        if fault == "truncate":
            await _respond(writer, reply.status_code, payload[: len(payload) // 2], declared=len(payload))
            return False
        if fault == "malformed":
            payload = payload[: len(payload) // 2] + b"\x00}{"
        await _respond(writer, reply.status_code, payload)
        return True


def _without_logprobs(payload: bytes) -> bytes:
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    for choice in data.get("choices", []) if isinstance(data, dict) else []:
        choice.pop("logprobs", None)
    return json.dumps(data).encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """Method, path, lower-cased headers and body of one HTTP/1.1 request; None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


async def _respond(writer: asyncio.StreamWriter, status: int, payload: bytes, extra: dict[str, str] | None = None,
                   declared: int | None = None) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", "Content-Type: application/json",
             f"Content-Length: {declared if declared is not None else len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
    await writer.drain()
