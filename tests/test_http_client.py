"""The HTTP client's retries against a real local server: transient failures are retried (tenacity) with the
server's Retry-After, permanent ones are not, and running out of retries is one resumable error."""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emprobe.model._providers._http_client import AdaptiveLimit, JsonClient, PermanentError, ServerUnavailable


class _Scripted(BaseHTTPRequestHandler):
    """Answers POSTs with the next status of the server's script (200 once it runs out)."""

    def do_POST(self):  # noqa: N802 (the http.server API)
        self.rfile.read(int(self.headers["Content-Length"]))
        script: list[int] = self.server.script  # type: ignore[attr-defined]
        status = script.pop(0) if script else 200
        self.server.seen.append(status)  # type: ignore[attr-defined]
        body = json.dumps({"ok": True} if status == 200 else {"error": {"message": f"status {status}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.script, httpd.seen = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _post(server, max_retries: int):
    client = JsonClient(f"http://127.0.0.1:{server.server_address[1]}", {}, timeout=5, max_retries=max_retries,
                        limit=AdaptiveLimit(2), backoff=0.01)

    async def go():
        try:
            return await client.post("/x", {"q": 1})
        finally:
            await client.aclose()

    return client, asyncio.run(go())


def test_transient_failures_are_retried_until_the_reply(server):
    server.script = [503, 500, 429]
    client, reply = _post(server, max_retries=3)
    assert reply == {"ok": True} and server.seen == [503, 500, 429, 200]
    assert (client.stats.retries, client.stats.requests, client.stats.ok) == (3, 4, 1)


def test_running_out_of_retries_is_one_resumable_error(server):
    server.script = [503] * 10
    with pytest.raises(ServerUnavailable, match="gave up after 2 retries: HTTP 503.*rerun the same command"):
        _post(server, max_retries=2)
    assert server.seen == [503, 503, 503]


def test_permanent_failures_are_not_retried(server):
    server.script = [400]
    with pytest.raises(PermanentError, match="HTTP 400: status 400"):
        _post(server, max_retries=5)
    assert server.seen == [400]


def test_a_server_never_reached_fails_at_once(tmp_path):
    from emprobe.model._providers._http_client import ServerUnavailable as Unavailable

    client = JsonClient("http://127.0.0.1:9", {}, timeout=5, max_retries=8, limit=AdaptiveLimit(2), backoff=5.0)

    async def go():
        try:
            return await client.post("/x", {})
        finally:
            await client.aclose()

    with pytest.raises(Unavailable, match="cannot connect .*is the server running"):
        asyncio.run(go())
    assert client.stats.retries == 0  # no backoff sleeps before saying so


def test_each_retry_is_said_as_it_happens(server, caplog):
    server.script = [503, 500]
    with caplog.at_level("WARNING", logger="emprobe.http"):
        _post(server, max_retries=3)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 503" in retries[0] and "retry 1 of 3" in retries[0]
