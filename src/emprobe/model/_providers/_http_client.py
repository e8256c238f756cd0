"""An asyncio JSON-over-HTTP client: adaptive concurrency, per-request timeouts, retries (tenacity) with backoff,
jitter and Retry-After.

It runs on its own event loop in a background thread (`LoopThread`), so synchronous code (the runner) can use it.
"""

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from emprobe.errors import EmprobeError

log = logging.getLogger("emprobe.http")
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
OVERLOAD_STATUSES = frozenset({429, 503, 529})


class TransientError(Exception):
    """A failure worth retrying: connection errors, timeouts, 429, 5xx, a malformed body."""

    def __init__(self, message: str, retry_after: float | None = None, overload: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.overload = overload


class PermanentError(Exception):
    """A failure that retrying will not fix: 4xx other than 408/409/425/429, or a body of the wrong shape."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerUnavailable(EmprobeError):
    """Retries ran out: the server is down or overloaded; rerunning the same command resumes."""


@dataclass
class ClientStats:
    """Counters the progress bar shows."""

    in_flight: int = 0
    requests: int = 0
    ok: int = 0
    retries: int = 0
    errors: int = 0


class AdaptiveLimit:
    """A concurrency limit: fixed when configured, else adapted to the server (gradient on per-token latency).

    A server that queues requests shows latency growing with concurrency, which pulls the limit down to about
    what keeps it busy; one that serves in parallel keeps latency flat and the limit grows towards `maximum`.
    429/503 and timeouts halve it.
    """

    def __init__(self, fixed: int | None = None, initial: int = 4, maximum: int = 64):
        self.adaptive = fixed is None
        self.maximum = fixed or maximum
        self.limit = float(fixed or min(initial, maximum))
        self.in_flight = 0
        self._best: float | None = None
        self._last_cut = 0.0
        self._cond: asyncio.Condition | None = None

    @asynccontextmanager
    async def slot(self):
        """Hold one of the `limit` request slots."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    def succeeded(self, seconds: float, tokens: int) -> None:
        """Move the limit towards limit * (best latency / this latency) + sqrt(limit)."""
        if not self.adaptive:
            return
        per_token = seconds / (tokens + 1)
        self._best = per_token if self._best is None else min(per_token, self._best * 1.005)
        gradient = min(1.0, max(0.5, self._best / per_token))
        target = self.limit * gradient + math.sqrt(self.limit)
        self.limit = min(self.maximum, max(1.0, 0.9 * self.limit + 0.1 * target))

    def overloaded(self) -> None:
        """Halve the limit, at most once a second."""
        now = time.monotonic()
        if self.adaptive and now - self._last_cut > 1.0:
            self.limit, self._last_cut = max(1.0, self.limit / 2), now


class JsonClient:
    """POSTs JSON and returns the decoded reply, retrying transient failures; secrets never reach its messages."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float, max_retries: int,
                 limit: AdaptiveLimit, secrets: tuple[str, ...] = (), backoff: float = 0.5,
                 max_backoff: float = 30.0, max_retry_after: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.timeout = timeout
        self.max_retries = max_retries
        self.limit = limit
        self.secrets = tuple(s for s in secrets if s)
        self.backoff, self.max_backoff, self.max_retry_after = backoff, max_backoff, max_retry_after
        self.stats = ClientStats()
        self._http: httpx.AsyncClient | None = None

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            pool = httpx.Limits(max_connections=self.limit.maximum, max_keepalive_connections=self.limit.maximum)
            self._http = httpx.AsyncClient(headers=self.headers, limits=pool,
                                           timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)))
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def post(self, path: str, body: dict[str, Any], tokens_of=lambda reply: 0) -> dict[str, Any]:
        """The JSON reply to POST `body`; raises PermanentError, or ServerUnavailable once retries run out."""
        retrying = AsyncRetrying(retry=retry_if_exception_type(TransientError), stop=stop_after_attempt(
            self.max_retries + 1), wait=self._wait, before_sleep=self._count_retry, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(path, body, tokens_of)
        except TransientError as failure:
            raise ServerUnavailable(f"{self.base_url}{path}: gave up after {self.max_retries} retries: "
                                    f"{failure}; rerun the same command to resume") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(self, path: str, body: dict[str, Any], tokens_of) -> dict[str, Any]:
        """One request in one of the limit's slots (released before any backoff sleep)."""
        async with self.limit.slot():
            self.stats.in_flight += 1
            started = time.monotonic()
            try:
                reply = await self._once(path, body)
            except TransientError as err:
                if err.overload:
                    self.limit.overloaded()
                raise
            finally:
                self.stats.in_flight -= 1
            self.limit.succeeded(time.monotonic() - started, tokens_of(reply))
            self.stats.ok += 1
            return reply

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        return self.delay(state.attempt_number, getattr(failure, "retry_after", None))

    def _count_retry(self, state: RetryCallState) -> None:
        """Count the retry and say it as it happens (a run that only waits would look hung)."""
        self.stats.retries += 1
        failure = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s; retry %d of %d in %.1f s", self.base_url, failure, state.attempt_number,
                    self.max_retries, wait)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins when it asks for longer."""
        backoff = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), backoff * 0.1)
        return backoff

    async def _once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.stats.requests += 1
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client().post(self.base_url + path, json=body)
        except (TimeoutError, httpx.TimeoutException):
            raise TransientError(f"no reply within {self.timeout:g}s", overload=True) from None
        except httpx.ConnectError as err:
            if self.stats.ok == 0:  # never reached: a wrong address or a server that is not running
                raise ServerUnavailable(self.redact(f"{self.base_url}: cannot connect ({err}); is the server "
                                                    "running at this address?")) from None
            raise TransientError(self.redact(f"{type(err).__name__}: {err}".strip())) from None
        except httpx.TransportError as err:
            raise TransientError(self.redact(f"{type(err).__name__}: {err}".strip())) from None
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status >= 400:
            message = self.redact(f"HTTP {status}: {error_message(response)}")
            if status in RETRY_STATUSES or status >= 500:
                raise TransientError(message, retry_after_seconds(response), overload=status in OVERLOAD_STATUSES)
            raise PermanentError(message, status)
        try:
            reply = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TransientError(f"malformed JSON in a {status} reply ({len(response.content)} bytes)") from None
        if not isinstance(reply, dict):
            raise PermanentError(f"expected a JSON object, got {type(reply).__name__}")
        return reply


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
