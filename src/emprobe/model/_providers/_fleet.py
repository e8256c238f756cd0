"""The servers of one model, each with its own adaptive concurrency limit and health; requests go where there is
room.

Routing: a request goes to a healthy server (no failure since its last success) with the most free slots of its
own adaptive limit, so each server gets work in proportion to what it completes. A server that refuses or drops
connections, or answers 5xx, is *down*: it gets no new requests for a cool-off (0.5 s doubling to 30 s), then one
probe at a time until a probe succeeds, which brings it back. A probe that is due goes before anything else, so a
server that recovers gets work again even when the others have room. While every server is down, requests go to
the one whose cool-off ends first, paced by each request's own retry backoff, exactly as with a single server.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from emprobe.model._providers._limit import AdaptiveLimit

log = logging.getLogger("emprobe.http")


class Upstream:
    """One server of the fleet: its URL, its own concurrency limit, its health and what it served."""

    def __init__(self, url: str, limit: AdaptiveLimit):
        self.url = url
        self.limit = limit
        self.strikes = 0
        """Cool-offs since its last success; 0 is healthy."""
        self.cooling_until = 0.0
        self.reached = False
        """It has answered at least once (any status)."""
        self.refused = False
        """It refused a connection before ever answering."""
        self.ok = 0
        """Requests it answered successfully."""

    @property
    def healthy(self) -> bool:
        return self.strikes == 0


class Fleet:
    """Hands out request slots across the upstreams (`slot()`) and keeps their health from what requests report."""

    def __init__(self, urls: Sequence[str], concurrency: int | None = None, max_concurrency: int = 64,
                 cool_off: float = 0.5, max_cool_off: float = 30.0):
        self.upstreams = [Upstream(url, AdaptiveLimit(concurrency, maximum=max_concurrency)) for url in urls]
        self.cool_off, self.max_cool_off = cool_off, max_cool_off
        self._cond: asyncio.Condition | None = None

    @property
    def where(self) -> str:
        """The servers' URLs, comma-separated."""
        return ",".join(u.url for u in self.upstreams)

    def limit(self) -> int:
        """The sum of the servers' current concurrency limits."""
        return sum(max(1, int(u.limit.limit)) for u in self.upstreams)

    def up(self) -> int:
        """How many servers are healthy."""
        return sum(u.healthy for u in self.upstreams)

    def never_reached(self) -> bool:
        """Every server refused its first connection and none ever answered: a wrong address or nothing running."""
        return all(u.refused and not u.reached for u in self.upstreams)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Upstream]:
        """Hold a request slot on the server chosen for the next request."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        async with cond:
            while (upstream := self._choose(time.monotonic())) is None:
                try:
                    async with asyncio.timeout(self._until_probe()):
                        await cond.wait()
                except TimeoutError:
                    pass
            upstream.limit.in_flight += 1
        try:
            yield upstream
        finally:
            async with cond:
                upstream.limit.in_flight -= 1
                cond.notify(max(1, self._free()))  # waking every waiter on each release costs CPU per waiter

    def _free(self) -> int:
        """Slots free across the servers: how many waiting requests one release can let through."""
        return sum(max(0, u.limit.room) for u in self.upstreams)

    def _choose(self, now: float) -> Upstream | None:
        healthy = [u for u in self.upstreams if u.healthy]
        if not healthy:  # every server failing: the one back soonest, paced by the requests' own backoff
            return next((u for u in sorted(self.upstreams, key=lambda u: u.cooling_until) if u.limit.room > 0), None)
        due = [u for u in self.upstreams if not u.healthy and u.cooling_until <= now and u.limit.in_flight == 0]
        if due:
            return due[0]  # a probe
        return max((u for u in healthy if u.limit.room > 0), key=lambda u: u.limit.room, default=None)

    def _until_probe(self) -> float | None:
        """Seconds until the next cool-off ends (a probe becomes due); None when none is cooling."""
        now = time.monotonic()
        ends = [u.cooling_until - now for u in self.upstreams if not u.healthy and u.cooling_until > now]
        return min(ends) if ends else None

    def succeeded(self, upstream: Upstream, seconds: float, tokens: int) -> None:
        """A request succeeded: adapt the server's limit; a server that was down is back."""
        upstream.limit.succeeded(seconds, tokens)
        upstream.ok += 1
        if upstream.strikes:
            if len(self.upstreams) > 1:
                log.warning("%s answers again; sending it requests", upstream.url)
            upstream.strikes, upstream.cooling_until = 0, 0.0

    def failed(self, upstream: Upstream, down: bool) -> bool:
        """A request failed; `down` when the server looks down (connection refused or dropped, 5xx), which starts
        or lengthens its cool-off. True when another server is healthy, so the retry can go there at once."""
        if not down:
            return False
        now = time.monotonic()
        if now >= upstream.cooling_until:  # failures of requests sent before the cool-off began do not lengthen it
            upstream.strikes += 1
            upstream.cooling_until = now + min(self.max_cool_off, self.cool_off * 2 ** (upstream.strikes - 1))
            if upstream.strikes == 1 and len(self.upstreams) > 1:
                log.warning("%s looks down; routing around it until it answers again", upstream.url)
        return any(u.healthy for u in self.upstreams if u is not upstream)
