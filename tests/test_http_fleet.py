"""One model on several servers, against real local HTTP servers: requests are spread by each server's measured
capacity, a server that refuses connections or answers 5xx is routed around (its failures cost no retries while
another server is up) and gets requests again once a probe finds it back; only every server down stops a run."""

import asyncio
import time

import pytest

from emprobe.model._providers._http_client import JsonClient, ServerUnavailable
from latency_server import Server
from openai_server import free_port


@pytest.fixture
def servers():
    made: list[Server] = []

    def make(**settings) -> Server:
        made.append(Server(**settings))
        return made[-1]

    yield make
    for server in made:
        server.close()


def post_all(client: JsonClient, n: int, during=None) -> list[dict]:
    """POST `n` requests concurrently; `during(i)` runs after the i-th reply."""

    async def go():
        done = 0

        async def one():
            nonlocal done
            reply = await client.post("/x", {})
            done += 1
            if during:
                during(done)
            return reply

        try:
            return await asyncio.gather(*(one() for _ in range(n)))
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_requests_follow_each_servers_capacity(servers):
    """A server that serves in parallel gets far more of the work than one that serves one request at a time."""
    wide, narrow = servers(latency=0.05), servers(latency=0.05, serial=True)
    client = JsonClient([wide.url, narrow.url], {}, timeout=30, max_retries=0, max_concurrency=32)
    began = time.monotonic()
    assert post_all(client, 240) == [{"ok": True}] * 240
    took = time.monotonic() - began
    assert len(wide.seen) > 3 * len(narrow.seen) > 0, (len(wide.seen), len(narrow.seen))
    assert took < 240 * 0.05 / 2  # far faster than the serial server alone
    limits = {u.url: u.limit.limit for u in client.fleet.upstreams}
    assert limits[wide.url] > limits[narrow.url]


def test_waiting_requests_fill_the_slots_a_release_frees_and_never_more():
    """200 requests wait for slots: with fixed limits no server ever serves more than its limit and every request
    gets a slot; with adaptive limits a release lets through as many as the grown limits allow (so what the
    servers serve at once grows well past the initial 4 each), and none is left waiting."""
    with Server(latency=0.02) as a, Server(latency=0.02) as b:
        client = JsonClient([a.url, b.url], {}, timeout=30, max_retries=0, concurrency=3)
        assert post_all(client, 200) == [{"ok": True}] * 200
        assert (a.peak, b.peak) == (3, 3) and len(a.seen) + len(b.seen) == 200
    with Server(latency=0.1) as a, Server(latency=0.1) as b:  # slow enough that all 200 wait before any is done
        client = JsonClient([a.url, b.url], {}, timeout=30, max_retries=0, max_concurrency=32)
        assert post_all(client, 200) == [{"ok": True}] * 200
        assert a.peak + b.peak > 2 * 2 * 4, (a.peak, b.peak)  # waking one waiter per release stays near 2 x 4


def test_a_refusing_server_is_routed_around_without_spending_retries(servers):
    live = servers()
    dead = f"http://127.0.0.1:{free_port()}"
    client = JsonClient([dead, live.url], {}, timeout=5, max_retries=0, backoff=5.0)
    assert post_all(client, 20) == [{"ok": True}] * 20
    assert len(live.seen) == 20 and client.stats.ok == 20
    assert [u.healthy for u in client.fleet.upstreams] == [False, True]


def test_every_server_refusing_from_the_start_fails_at_once():
    client = JsonClient([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"], {}, timeout=5,
                        max_retries=8, backoff=5.0)
    began = time.monotonic()
    with pytest.raises(ServerUnavailable, match="cannot connect .*is the server running"):
        post_all(client, 4)
    assert time.monotonic() - began < 5


def test_a_failing_server_gets_requests_again_once_it_recovers(servers, caplog):
    flaky, steady = servers(latency=0.01), servers(latency=0.01)
    client = JsonClient([flaky.url, steady.url], {}, timeout=5, max_retries=0, backoff=0.05, max_backoff=0.2)

    def script(done: int) -> None:
        if done == 30:
            flaky.answer(500)
        elif done == 120:
            flaky.answer(200)

    with caplog.at_level("WARNING", logger="emprobe.http"):
        assert post_all(client, 300, script) == [{"ok": True}] * 300
    statuses = flaky.seen
    first_500, last_500 = statuses.index(500), len(statuses) - 1 - statuses[::-1].index(500)
    assert statuses[last_500 + 1:].count(200) >= 20  # back in the rotation after the outage
    assert statuses[first_500:last_500].count(200) == 0
    assert "looks down" in caplog.text and "answers again" in caplog.text
    assert client.stats.ok == 300


def test_every_server_down_stops_after_the_retry_budget(servers):
    a, b = servers(), servers()
    a.answer(503)
    b.answer(500)
    client = JsonClient([a.url, b.url], {}, timeout=5, max_retries=2, backoff=0.01)
    with pytest.raises(ServerUnavailable, match="gave up after 2 retries: HTTP 50.*rerun the same command"):
        post_all(client, 1)
    assert 3 <= len(a.seen) + len(b.seen) <= 6


def test_a_request_moved_off_a_down_server_can_fail_as_a_probe_without_ending_the_run():
    """With no retries allowed, a request that moved once and then served as the probe of a server still down
    moves again; only a failure with no other server up counts."""
    from types import SimpleNamespace

    from emprobe.model._providers._http_client import FREE_MOVES, TransientError, _Tries

    def state(elsewhere: bool):
        failure = TransientError("HTTP 500")
        failure.elsewhere = elsewhere  # type: ignore[attr-defined]
        return SimpleNamespace(outcome=SimpleNamespace(exception=lambda: failure))

    tries = _Tries(max_retries=0)
    for _ in range(FREE_MOVES):
        assert not tries.spent(state(elsewhere=True)) and tries.moved
    assert tries.spent(state(elsewhere=True))  # moves are bounded: a request that no server answers still ends
    assert _Tries(max_retries=0).spent(state(elsewhere=False))
