"""An asyncio JSON-over-HTTP client for one model on one or more servers: per-server adaptive concurrency and
health (`Fleet`), per-request timeouts, retries (tenacity) with backoff, jitter and Retry-After, moved to another
server at once when one is up.

It runs on its own event loop in a background thread (`LoopThread`), so synchronous code (the runner) can use it.
"""

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from emprobe.errors import EmprobeError
from emprobe.model._providers._fleet import Fleet, Upstream

log = logging.getLogger("emprobe.http")
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
OVERLOAD_STATUSES = frozenset({429, 503, 529})


class TransientError(Exception):
    """A failure worth retrying: connection errors, timeouts, 429, 5xx, a malformed body. `overload` halves the
    server's concurrency limit; `down` (refused or dropped connections, 5xx, a broken body) cools the server off."""

    def __init__(self, message: str, retry_after: float | None = None, overload: bool = False, down: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.overload = overload
        self.down = down
        self.url = ""
        """The server that failed."""
        self.elsewhere = False
        """Another server was up when this one failed."""


class PermanentError(Exception):
    """A failure that retrying will not fix: 4xx other than 408/409/425/429, or a body of the wrong shape."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerUnavailable(EmprobeError):
    """Retries ran out: every server is down or overloaded; rerunning the same command resumes."""


@dataclass
class ClientStats:
    """Counters the progress bar shows."""

    in_flight: int = 0
    requests: int = 0
    ok: int = 0
    retries: int = 0
    errors: int = 0


class JsonClient:
    """POSTs JSON to a model's servers (`Fleet`) and returns the decoded reply, retrying transient failures (on
    another server at once when one is up); secrets never reach its messages."""

    def __init__(self, base_urls: str | Sequence[str], headers: dict[str, str], timeout: float, max_retries: int,
                 concurrency: int | None = None, max_concurrency: int = 64, secrets: tuple[str, ...] = (),
                 backoff: float = 0.5, max_backoff: float = 30.0, max_retry_after: float = 120.0):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self.fleet = Fleet([u.rstrip("/") for u in urls], concurrency, max_concurrency, backoff, max_backoff)
        self.headers = headers
        self.timeout = timeout
        self.max_retries = max_retries
        self.secrets = tuple(s for s in secrets if s)
        self.backoff, self.max_backoff, self.max_retry_after = backoff, max_backoff, max_retry_after
        self.stats = ClientStats()
        self._http: dict[str, httpx.AsyncClient] = {}
        """A connection pool per server: httpx's pool scans all its connections on every request, so one pool for a
        whole fleet costs CPU in proportion to the fleet (measured in docs/scale.md)."""
        self._tls: ssl.SSLContext | None = None
        """One TLS context for every pool (building one loads the CA bundle: tens of milliseconds)."""

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _client(self, upstream: Upstream) -> httpx.AsyncClient:
        if upstream.url not in self._http:
            self._tls = self._tls or httpx.create_ssl_context()
            most = upstream.limit.maximum
            pool = httpx.Limits(max_connections=most, max_keepalive_connections=most)
            self._http[upstream.url] = httpx.AsyncClient(
                headers=self.headers, limits=pool, verify=self._tls,
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)))
        return self._http[upstream.url]

    async def aclose(self) -> None:
        clients, self._http = list(self._http.values()), {}
        for client in clients:
            await client.aclose()

    async def post(self, path: str, body: dict[str, Any], tokens_of=lambda reply: 0) -> dict[str, Any]:
        """The JSON reply to POST `body`; raises PermanentError, or ServerUnavailable once retries run out."""
        tries = _Tries(self.max_retries)
        retrying = AsyncRetrying(retry=retry_if_exception_type(TransientError), stop=tries.spent,
                                 wait=partial(self._wait, tries), before_sleep=partial(self._count_retry, tries),
                                 reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(path, body, tokens_of)
        except TransientError as failure:
            raise ServerUnavailable(f"{failure.url}{path}: gave up after {self.max_retries} retries: "
                                    f"{failure}; rerun the same command to resume") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(self, path: str, body: dict[str, Any], tokens_of) -> dict[str, Any]:
        """One request in a slot of the chosen server (released before any backoff sleep)."""
        async with self.fleet.slot() as upstream:
            self.stats.in_flight += 1
            started = time.monotonic()
            try:
                reply = await self._once(upstream, path, body)
            except TransientError as err:
                if err.overload:
                    upstream.limit.overloaded()
                err.url = upstream.url
                err.elsewhere = self.fleet.failed(upstream, err.down)
                raise
            finally:
                self.stats.in_flight -= 1
            self.fleet.succeeded(upstream, time.monotonic() - started, tokens_of(reply))
            self.stats.ok += 1
            return reply

    def _wait(self, tries: "_Tries", state: RetryCallState) -> float:
        if tries.moved:
            return 0.0
        failure = state.outcome.exception() if state.outcome else None
        return self.delay(tries.counted, getattr(failure, "retry_after", None))

    def _count_retry(self, tries: "_Tries", state: RetryCallState) -> None:
        """Count the retry and say it as it happens (a run that only waits would look hung)."""
        self.stats.retries += 1
        failure = state.outcome.exception() if state.outcome else None
        where = getattr(failure, "url", "")
        if tries.moved:
            log.warning("%s: %s; retrying on another server", where, failure)
            return
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s; retry %d of %d in %.1f s", where, failure, tries.counted, self.max_retries, wait)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins when it asks for longer."""
        backoff = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), backoff * 0.1)
        return backoff

    async def _once(self, upstream: Upstream, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.stats.requests += 1
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client(upstream).post(upstream.url + path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            upstream.refused = upstream.refused or not upstream.reached
            if self.fleet.never_reached():  # a wrong address or a server that is not running
                raise ServerUnavailable(self.redact(f"{self.fleet.where}: cannot connect ({err}); is the server "
                                                    "running at this address?")) from None
            raise TransientError(self.redact(f"{type(err).__name__}: {err}".strip()), down=True) from None
        except (TimeoutError, httpx.TimeoutException):
            raise TransientError(f"no reply within {self.timeout:g}s", overload=True) from None
        except httpx.TransportError as err:
            raise TransientError(self.redact(f"{type(err).__name__}: {err}".strip()), down=True) from None
        upstream.reached = True
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status >= 400:
            message = self.redact(f"HTTP {status}: {error_message(response)}")
            if status in RETRY_STATUSES or status >= 500:
                raise TransientError(message, retry_after_seconds(response), overload=status in OVERLOAD_STATUSES,
                                     down=status >= 500)
            raise PermanentError(message, status)
        try:
            reply = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TransientError(f"malformed JSON in a {status} reply ({len(response.content)} bytes)",
                                 down=True) from None
        if not isinstance(reply, dict):
            raise PermanentError(f"expected a JSON object, got {type(reply).__name__}")
        return reply


FREE_MOVES = 8
"""Moves to another server one request may make without counting them as retries."""


class _Tries:
    """One request's failures. One that leaves another server up moves there at once without counting (at most
    FREE_MOVES times, or `max_retries + 1` if more, so a request that no server can answer still ends); the
    others count against `max_retries`. A moved request can be chosen as the probe of a server still down,
    so one move is not enough even with no retries allowed."""

    def __init__(self, max_retries: int):
        self.max_retries = max_retries
        self.counted = 0
        self.free = 0
        self.moved = False
        """The last failure moves to another server at once."""

    def spent(self, state: RetryCallState) -> bool:
        """Tenacity's stop: record the failure; True once it is one too many."""
        failure = state.outcome.exception() if state.outcome else None
        self.moved = bool(getattr(failure, "elsewhere", False)) and self.free < max(FREE_MOVES, self.max_retries + 1)
        if self.moved:
            self.free += 1
            return False
        self.counted += 1
        return self.counted > self.max_retries


def error_message(response: httpx.Response) -> str:
    """The server's own error message, from an OpenAI-style error body or the first 300 characters."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return str(error)[:300]


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds: a number or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LoopThread:
    """An asyncio event loop running in a daemon thread, for calling coroutines from synchronous code."""

    def __init__(self, name: str = "emprobe-http"):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine):
        """Run `coro` to completion on the loop; Ctrl-C cancels it."""
        future = self.submit(coro)
        try:
            return wait_interruptibly(future)
        finally:
            future.cancel()

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


def wait_interruptibly(future: concurrent.futures.Future, poll: float = 0.2):
    """future.result(), waiting in short steps so Ctrl-C is noticed at once."""
    while not future.done():
        concurrent.futures.wait([future], timeout=poll)
    return future.result()
