"""The adaptive concurrency limit of one server: how many requests it is sent at once."""

import math
import time


class AdaptiveLimit:
    """A concurrency limit: fixed when configured, else adapted to the server (gradient on per-token latency).

    A server that queues requests shows latency growing with concurrency, which pulls the limit down to about
    what keeps it busy; one that serves in parallel keeps latency flat and the limit grows towards `maximum`.
    429/503 and timeouts halve it. `in_flight` is kept by whoever hands out the slots (`Fleet`).
    """

    def __init__(self, fixed: int | None = None, initial: int = 4, maximum: int = 64):
        self.adaptive = fixed is None
        self.maximum = fixed or maximum
        self.limit = float(fixed or min(initial, maximum))
        self.in_flight = 0
        self._best: float | None = None
        self._last_cut = 0.0

    @property
    def room(self) -> int:
        """Requests it may take now."""
        return max(1, int(self.limit)) - self.in_flight

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
