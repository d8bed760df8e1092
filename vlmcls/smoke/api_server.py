"""A loopback stand-in for the OpenAI and Anthropic HTTP APIs (stdlib only).

It speaks `POST /v1/chat/completions` and `POST /v1/messages` with bodies the real SDKs parse,
usage included. Two uses:

* smoke API models (`weights = "smoke:openai"` / `"smoke:anthropic"`): `shared_server()` starts one
  per process; it reads the candidate list out of the prompt and names one candidate chosen by a
  hash of the request — chance-level and deterministic, so it proves the plumbing and nothing else;
  asked for `logprobs` (ranking) it answers the bare label, with made-up log-probabilities (the
  smoke model is vlmcls.smoke.api_model; `ApiServer(logprobs=False)` stands in for a model without them);
* tests: `script(...)` queues faults or canned replies (429 with `retry-after-ms`, 500, a delay
  longer than the client's timeout, a malformed body), and every request is recorded (headers,
  JSON body, arrival and finish times) for assertions. For several servers: `kill()` stands in
  for a crashed machine (no reply to the requests it holds, open connections cut, new ones refused),
  `revive()` brings it back on the same port, and a `gate` holds every reply until it is set.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import api_model
# the smoke model's answers live in api_model; re-exported here, where callers and tests name them
from .api_model import _choices, _count_images, first_listed, parse_candidates, prompt_texts, smoke_answer  # noqa: F401

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclass(frozen=True)
class Reply:
    """One scripted reply. `body=None` means the normal answer (status 200) or the API's usual error
    body (any other status); bytes are sent verbatim (e.g. a malformed body)."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    delay_s: float = 0.0
    text: str | None = None  # answer text to send instead of the hashed choice
    top_logprobs: tuple[tuple[str, float], ...] | None = None  # the first token's (token, logprob), if asked


def rate_limited(retry_after_ms: int) -> Reply:
    return Reply(429, (("retry-after-ms", str(retry_after_ms)),))


def server_error(status: int = 500) -> Reply:
    return Reply(status)


def slow(delay_s: float) -> Reply:
    return Reply(delay_s=delay_s)


def malformed() -> Reply:
    return Reply(headers=(("content-type", "application/json"),), body=b'{"id": "trunc')


@dataclass
class Record:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: Any
    start: float
    end: float = 0.0
    status: int = 0


@dataclass
class _State:
    script: deque = field(default_factory=deque)
    records: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay_s: float = 0.0  # added to every request (makes overlapping requests observable)
    gate: threading.Event | None = None  # when set to an Event, replies wait until it is set
    kill_at: int = 0  # kill() when the request with this number (1-based) arrives; 0: never
    dead: bool = False
    connections: set = field(default_factory=set)  # open client sockets (kill() cuts them)
    answer: Any = None  # request body -> answer text, instead of the hashed choice (e.g. first_listed)
    logprobs: bool = True  # send them when asked (False: a model that has none)


class ApiServer:
    """`with ApiServer() as srv:` — `srv.url` is the root (Anthropic); OpenAI wants `srv.url + "/v1"`."""

    def __init__(self, delay_s: float = 0.0, answer: Any = None, logprobs: bool = True,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = _State(delay_s=delay_s, answer=answer, logprobs=logprobs)
        self._httpd: ThreadingHTTPServer | None = None
        self._host = host  # `python -m vlmcls stub-server --host/--port`; tests take a free loopback port
        self._port = port  # kept across kill() so that revive() comes back at the same URL

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ApiServer":
        handler = type("Handler", (_Handler,), {"state": self.state, "server_obj": self})
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self._port = self._httpd.server_address[1]
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="vlmcls-api-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def kill(self) -> None:
        """Die like a crashed machine: requests in hand get no reply, open connections are cut and
        new ones refused (closing the listener alone would leave keep-alive connections served)."""
        with self.state.lock:
            self.state.dead = True
            conns = list(self.state.connections)
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            threading.Thread(target=_close, args=(httpd,), daemon=True).start()  # kill() may run in a handler
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def kill_at(self, n: int) -> None:
        """Kill the server when its n-th request arrives (that request gets no reply)."""
        self.state.kill_at = n

    def revive(self) -> "ApiServer":
        """Come back at the same URL after kill()."""
        self.state.dead = False
        return self.start()

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._port, "server not started"
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host  # listening everywhere: this machine's
        return f"http://{host}:{self._port}"

    # ------------------------------------------------------------------ scripting and records
    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one, then the normal answer once empty."""
        with self.state.lock:
            self.state.script.extend(replies)

    @property
    def records(self) -> list[Record]:
        with self.state.lock:
            return list(self.state.records)

    def drain(self) -> int:
        """Forget the recorded requests and return how many there were: a long-lived stand-in
        (`vlmcls stub-server`) must not keep every image it was sent."""
        with self.state.lock:
            n = len(self.state.records)
            self.state.records.clear()
        return n

    def max_overlap(self) -> int:
        """The most requests that were being served at the same moment."""
        events = sorted(e for r in self.records for e in ((r.start, 1), (r.end, -1)))
        best = now = 0
        for _, step in events:  # at a tie, -1 sorts first: touching intervals do not overlap
            now += step
            best = max(best, now)
        return best


def _close(httpd: ThreadingHTTPServer) -> None:
    httpd.shutdown()
    httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: _State
    server_obj: ApiServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def setup(self) -> None:
        super().setup()
        with self.state.lock:
            self.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.state.lock:
            self.state.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:  # the socket was cut by kill()
            pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        record = Record(self.path, {k.lower(): v for k, v in self.headers.items()}, None, time.monotonic())
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            record.body = json.loads(raw)
        except ValueError:
            record.body = raw.decode("utf-8", "replace")
        with self.state.lock:
            if self.state.dead:
                self.close_connection = True
                return
            self.state.records.append(record)
            reply = self.state.script.popleft() if self.state.script else Reply(
                text=self.state.answer(record.body) if self.state.answer else None)
            doomed = len(self.state.records) == self.state.kill_at
        if doomed:
            self.server_obj.kill()
        time.sleep(self.state.delay_s + reply.delay_s)
        if self.state.gate is not None:
            self.state.gate.wait(30.0)
        if self.state.dead:  # killed while this request waited: a dead machine answers nothing
            self.close_connection = True
            record.end = time.monotonic()
            return
        status, headers, body = _render(self.path.split("?", 1)[0], record.body, reply, self.state.logprobs)
        try:
            self._send(status, headers, body)
            # recorded once sent: a reply cut by kill() (a request another thread was answering as the server
            # died) never reached the client, which asks another server: it must not count as answered here
            record.status = status
        except OSError:  # the client timed out and left, or kill() cut the socket
            pass
        finally:
            record.end = time.monotonic()

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        names = {k.lower() for k, _ in headers}
        if "content-type" not in names:
            self.send_header("content-type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# ---------------------------------------------------------------------- bodies
def _render(path: str, request: Any, reply: Reply, logprobs: bool = True) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = list(reply.headers)
    if path not in (OPENAI_PATH, ANTHROPIC_PATH):
        return 404, headers, _error_body(path, 404, f"no route {path}")
    if not isinstance(request, dict):
        return 400, headers, _error_body(path, 400, "request body is not JSON")
    if reply.body is not None:
        return reply.status, headers, reply.body
    if reply.status != 200:
        return reply.status, headers, _error_body(path, reply.status, f"scripted {reply.status}")
    text = reply.text if reply.text is not None else smoke_answer(request)
    if path == ANTHROPIC_PATH:
        return 200, headers, json.dumps(_anthropic_body(request, text)).encode()
    scores = None
    if logprobs and api_model.wanted(request):
        labels = _choices(request) or parse_candidates("\n\n".join(prompt_texts(request)))
        scores = api_model.block(request, text, labels, reply.top_logprobs)
    return 200, headers, json.dumps(_openai_body(request, text, scores)).encode()


def _error_body(path: str, status: int, message: str) -> bytes:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "api_error")
    if path == ANTHROPIC_PATH:
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


def _usage(request: dict, text: str) -> tuple[int, int]:
    """Made-up but deterministic counts: a word is a token, an image is 85 tokens."""
    words = sum(len(t.split()) for t in prompt_texts(request))
    return words + 85 * _count_images(request), max(1, len(text.split()))


def _openai_body(request: dict, text: str, logprobs: dict | None = None) -> dict:
    p, c = _usage(request, text)
    return {
        "id": api_model.OPENAI_REPLY_ID, "object": "chat.completion", "created": int(time.time()),
        "model": request.get("model", ""),
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def _anthropic_body(request: dict, text: str) -> dict:
    p, c = _usage(request, text)
    return {
        "id": api_model.ANTHROPIC_REPLY_ID, "type": "message", "role": "assistant", "model": request.get("model", ""),
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": p, "output_tokens": c},
    }



# ---------------------------------------------------------------------- one server per process
_SHARED: ApiServer | None = None
_SHARED_LOCK = threading.Lock()


def shared_server() -> ApiServer:
    """The process's smoke server, started on first use (daemon thread: it ends with the process)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = ApiServer().start()
        return _SHARED
