"""Small OpenAI-compatible HTTP servers for the openai-http tests: real sockets on 127.0.0.1, with faults.

A ``ChatServer`` answers ``POST /v1/chat/completions`` from a thread of this process (stdlib
``http.server``), records every request (headers and JSON body), and can misbehave the ways a
served model does: answer an HTTP error status (all requests, or the first few), hang past the
client's timeout, close the connection without answering, and ignore or refuse ``response_format``.
It is the server side of the tests, not a mock of the client: the ``openai`` client under test goes
through its real HTTP stack. Also: free ports, and waiting for and stopping the server processes the
tests start (``transformers serve``, a Ray head).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

USAGE = {"prompt_tokens": 123, "completion_tokens": 45}
"""Token counts every answer reports (so cost can be checked against the price formula)."""


@dataclass
class Recorded:
    """One request as the server saw it."""

    headers: dict[str, str]
    body: dict[str, Any]


def default_answer(body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """The values a well-behaved model would give (the same for every document)."""
    return {"invoice_number": "INV-7", "total": "12.50"}


class ChatServer:
    """An OpenAI-style chat completions server on 127.0.0.1 with an optional fault.

    Args:
        status: Answer this HTTP status instead of a completion ...
        fail_first: ... to the first ``fail_first`` requests only (None: to every request).
        hang_s: Wait this long before answering (released at ``stop``).
        close: Close the connection without answering.
        schema: "honour" (answer JSON following the request's schema), "ignore" (answer free text
            whatever ``response_format`` says) or "reject" (HTTP 400 to any request carrying it).
        answer: (body, headers) -> the field values of an answer.
        free_text: The answer when ``response_format`` is not honoured (default: what a model asked in words
            would say: hello to a request for the word hello, else the values as JSON).
    """

    def __init__(self, status: int | None = None, fail_first: int | None = None, hang_s: float = 0.0,
                 close: bool = False, schema: str = "honour",
                 answer: Callable[[dict, dict], dict] = default_answer, free_text: str | None = None):
        self.status, self.fail_first, self.hang_s, self.close = status, fail_first, hang_s, close
        self.schema, self.answer, self.free_text = schema, answer, free_text
        self.requests: list[Recorded] = []
        self.in_flight = self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def record(self, headers: dict[str, str], body: dict[str, Any]) -> int:
        """Keep a request and count it in flight; returns how many came before it."""
        with self._lock:
            self.requests.append(Recorded(headers, body))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return len(self.requests) - 1

    def done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reply(self, index: int, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for the ``index``-th request (after its fault, if any)."""
        if self.status and (self.fail_first is None or index < self.fail_first):
            return self.status, {"error": {"message": f"injected HTTP {self.status}", "type": "server_error"}}
        wants_schema = (body.get("response_format") or {}).get("type") == "json_schema"
        if wants_schema and self.schema == "reject":
            return 400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}
        values = self.answer(body, headers)
        if wants_schema and self.schema == "honour":
            schema = body["response_format"]["json_schema"]["schema"]
            content = json.dumps({k: _conforming(k, p, values) for k, p in schema["properties"].items()})
        else:
            content = self.free_text if self.free_text is not None else _free_answer(body, values)
        return 200, completion(body.get("model", ""), content)

    def wait_or_released(self, seconds: float) -> None:
        self._released.wait(seconds)


def completion(model: str, content: str) -> dict[str, Any]:
    """A chat completion response as OpenAI's API returns it."""
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": f"served/{model}",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {**USAGE, "total_tokens": USAGE["prompt_tokens"] + USAGE["completion_tokens"]},
    }


def _free_answer(body: dict[str, Any], values: dict[str, Any]) -> str:
    """An unconstrained model's answer: it does what the last message asks."""
    asked = str(body.get("messages", [{}])[-1].get("content", ""))
    return "Hello!" if "word hello" in asked else json.dumps(values)


def _conforming(key: str, prop: dict[str, Any], values: dict[str, Any]) -> Any:
    """A value a schema-constrained decoder could produce for one property."""
    if prop.get("type") == "boolean":
        return True
    return values.get(key)


def _handler_class(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            index = server.record(headers, body)
            try:
                self._answer(index, body, headers)
            finally:
                server.done()

        def _answer(self, index: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            if server.close:
                self.close_connection = True  # the socket closes with nothing written
                return
            if server.hang_s:
                server.wait_or_released(server.hang_s)
            status, payload = server.reply(index, body, headers)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timed out) before the answer
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            """Quiet: the tests read ``requests`` instead."""

    return Handler


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout_s: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"{what} not ready after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM a process a test started (and its children), then kill what is left behind."""
    import psutil

    try:
        started = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for p in psutil.wait_procs(started, timeout=5)[1]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
