"""A real HTTP server on 127.0.0.1 whose latency, capacity and status a test sets, and which counts what it
served: the statuses it answered in order, and the most requests it was serving at once."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_REPLY = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "I would help."},
                           "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
"""An OpenAI-compatible chat completion, for tests that generate through the HTTP backend."""


class _Handler(BaseHTTPRequestHandler):
    """Answers POSTs after `latency` seconds (one at a time when `serial`), or with `status` while it is set."""

    def do_POST(self):  # noqa: N802 (the http.server API)
        self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        with server.decide_lock:
            status = server.status
            server.seen.append(status)  # in the order statuses were given
            server.active += 1
            server.peak = max(server.peak, server.active)
        try:
            if status == 200:
                with server.serial_lock:
                    time.sleep(server.latency)
        finally:
            with server.decide_lock:
                server.active -= 1
        body = json.dumps(server.reply if status == 200 else {"error": {"message": f"status {status}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server:
    """The server in a thread; `serial` serves one request at a time; 200s answer `reply`."""

    def __init__(self, latency: float = 0.0, serial: bool = False, reply: dict | None = None):
        self.httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.status, self.httpd.latency, self.httpd.seen = 200, latency, []
        self.httpd.reply = {"ok": True} if reply is None else reply
        self.httpd.active = self.httpd.peak = 0
        self.httpd.serial_lock = threading.Lock() if serial else _NoLock()
        self.httpd.decide_lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def seen(self) -> list[int]:
        return self.httpd.seen

    @property
    def peak(self) -> int:
        """The most requests it was serving at once."""
        return self.httpd.peak

    def answer(self, status: int) -> None:
        with self.httpd.decide_lock:
            self.httpd.status = status

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoLock:
    def __enter__(self): ...
    def __exit__(self, *exc): ...
