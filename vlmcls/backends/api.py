"""API backends: OpenAI chat completions, Anthropic messages, and any OpenAI-compatible server
(vLLM, SGLang, Ollama, LM Studio) reached by base URL.

Catalog backends served here: "openai", "anthropic", "openai-compatible"; the model name sent is
`entry.weights`. Keys and base URLs come from the SDKs' own environment variables
(`OPENAI_API_KEY`, `OPENAI_BASE_URL`, `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`). `settings.base_url`
(--base-url) points "openai-compatible" models only at a server, with the key from
`OPENAI_COMPATIBLE_API_KEY` (or a dummy): a real OpenAI key is never sent to a URL given for
another server, and OpenAI/Anthropic models in the same run keep talking to their own APIs.
`weights = "smoke:<kind>"` talks to a loopback stand-in server instead (vlmcls.smoke.api_server),
so the whole path runs offline.

Faults: the SDKs retry 408/409/429/5xx, timeouts and connection errors themselves
(`max_retries=settings.max_retries`, `timeout=settings.timeout_s`), honouring `retry-after-ms` and
`Retry-After`. We add two things they lack: a cap on Retry-After (Anthropic's SDK would wait
however long it is told; a wait above the cap means an exhausted quota, so the request is not
retried and becomes an error row), and a bounded retry of malformed 200 bodies, which neither SDK
retries. A bad key, a forbidden or unknown model (401/403/404) breaks every request alike: that is
raised once from `answer()`, after the requests already in flight, instead of filling a run with
identical error rows.

Several servers (`--base-url http://a:8000/v1,http://b:8000/v1` or a file of URLs, one deployment of
one served model): each request goes to the server with the fewest requests in flight (ties: the one
sent the fewest), so a slow or busy machine gets less. A server that fails a request after the SDK's
retries (connection refused or cut, timeout, 5xx) is taken out for `server_cooldown_s` (catalog
option, default 30 s) and the request is sent to another one: a dying machine loses no sample. Each
request tries each server at most once. When its cool-down ends, a server is re-admitted on
probation: one request at a time until one succeeds. `notes` lists per-server requests and errors.

Ranking (--resolver rank, OpenAI and compatible servers only: Anthropic's API returns no
log-probabilities): each reply's first-token distribution ranks the candidates where it tells them
apart, by the rules in vlmcls.backends.api_rank; `notes` count the answers it could not rank (they
are resolved from their text), and a model that sends no logprobs at all stops the case with that reason.

The pool of servers lives in vlmcls.backends.servers, each API's request and reply shapes in
vlmcls.backends.api_protocols.

The openai and anthropic packages are imported only by `load()`, so importing this module is cheap.
"""
from __future__ import annotations

import base64
import email.utils
import importlib.util
import json
import logging
import os
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import Unavailable
from ..settings import redact_urls, server_urls
from ..smoke import is_smoke
from ..types import Answer, Query
from . import api_rank
from .api_protocols import AnthropicProtocol, Malformed, OpenAIProtocol, Reply, encode_jpeg
from .servers import COOLDOWN_S, Pool, Server, display_url

# Re-exported: callers and tests name them as api.X.
__all__ = ["COOLDOWN_S", "ApiBackend", "display_url", "encode_jpeg", "estimate_cost", "load", "mask", "requirements",
           "retry_after_s", "scrub"]

if TYPE_CHECKING:  # pragma: no cover
    from ..catalog import ModelEntry
    from ..settings import BackendSettings
    from ..types import LabelSet

SDK = {"openai": "openai", "openai-compatible": "openai", "anthropic": "anthropic"}
COMPAT_KEY_ENV = "OPENAI_COMPATIBLE_API_KEY"
KEY_ENVS = {
    "openai": ("OPENAI_API_KEY",),
    "openai-compatible": (COMPAT_KEY_ENV, "OPENAI_API_KEY"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
}
MAX_RETRY_AFTER_S = 120.0  # the OpenAI SDK's own limit; override with options.max_retry_after_s
NO_RANKING = "--resolver rank: ranking is not available"
STAND_IN_NOTE = ("answers came from vlmcls's stub server (a loopback stand-in, `python -m vlmcls stub-server`), "
                 "not a model: the accuracy is chance, never a model's")
NO_KEY = "EMPTY"  # what vLLM and friends accept when started without --api-key
SMOKE_KEY = "smoke-key-not-a-secret"
FATAL_STATUS = (401, 403, 404)
ERROR_CHARS = 500


# ---------------------------------------------------------------------- module API
def requirements(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> str | None:
    """Why this entry cannot run here (one line), or None."""
    sdk = SDK[entry.backend]
    if importlib.util.find_spec(sdk) is None:
        return f'the {sdk} SDK is not installed: pip install "vlmcls[api]"'
    if settings.constrained and entry.backend != "openai-compatible":
        return "constrained decoding needs an OpenAI-compatible server that takes a choice list (vLLM)"
    if settings.rank and entry.backend == "anthropic":
        return ("--resolver rank: ranking is not available for Anthropic models: the Messages API returns "
                "no token log-probabilities to score the candidates with")
    if is_smoke(entry.weights):
        return None
    if entry.backend == "openai-compatible":
        if not (settings.base_url or os.environ.get("OPENAI_BASE_URL")):
            return "no server URL for an OpenAI-compatible backend: pass --base-url or set OPENAI_BASE_URL"
        return None  # a local server usually needs no key
    names = KEY_ENVS[entry.backend]
    if not any(os.environ.get(n) for n in names):
        return f"{names[0]} is not set"
    return None


def load(entry: "ModelEntry", settings: "BackendSettings", labels: "LabelSet") -> "ApiBackend":
    reason = requirements(entry, settings, labels)
    if reason:
        raise RuntimeError(f"model {entry.name!r} cannot run: {reason}")
    sdk = importlib.import_module(SDK[entry.backend])
    base_urls, api_key = _endpoint(entry, settings)
    servers = [Server(url or "default", _client(sdk, entry, settings, url, api_key)) for url in base_urls]
    protocol = AnthropicProtocol if entry.backend == "anthropic" else OpenAIProtocol
    cooldown = float(settings.extra.get("server_cooldown_s", COOLDOWN_S))
    pool = Pool(servers, cooldown, (sdk.APIConnectionError,))
    return ApiBackend(entry, settings, pool, protocol(entry, settings))


def estimate_cost(entry: "ModelEntry", prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """US dollars for one request at the catalog price; None when the price or a count is unknown."""
    if entry.price is None or prompt_tokens is None or completion_tokens is None:
        return None
    price_in, price_out = entry.price
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


# ---------------------------------------------------------------------- secrets
_KEY_LIKE = (
    (re.compile(r"sk-[A-Za-z0-9_\-*.]{4,}"), "sk-***"),
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;}]+"), "Bearer ***"),
    (re.compile(r"(?i)\b(x-api-key|api[_-]?key|authorization)([\"']?\s*[:=]\s*[\"']?)(?:(?:basic|bearer|token)\s+)?"
                r"[^\s\"',;}]+"), r"\1\2***"),
)


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with the given secrets and anything key-like (sk-..., Bearer ..., api_key=...) masked."""
    text = redact_urls(mask(text, secrets))  # an SDK error may quote the URL it failed on
    for pattern, replacement in _KEY_LIKE:
        text = pattern.sub(replacement, text)
    return text


def mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with each exact secret masked (model answers get only this, not the pattern scrub)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


URL_ENVS = ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")


def url_secrets(urls: Sequence[str | None]) -> tuple[str, ...]:
    """What server URLs carry besides the server: user:password (as written, decoded, and as the Basic
    header httpx sends for them) and query values. Error text gets them masked exactly: a server may
    echo them where redact_urls sees no URL (a 401 naming them, a 404 naming the request path, into
    which the SDK puts a base URL's query string)."""
    found: list[str] = []
    for url in urls:
        if not url or "://" not in url:
            continue
        parts = urllib.parse.urlsplit(url)
        user, password = parts.username, parts.password
        if user is not None or password is not None:
            plain = [urllib.parse.unquote(x or "") for x in (user, password)]
            found += [password or user or "", plain[1] or plain[0], base64.b64encode(":".join(plain).encode()).decode()]
        found += [v for _, v in urllib.parse.parse_qsl(parts.query)]
    return tuple(found)


class LogRedactor(logging.Filter):
    """A log handler's filter: the SDKs', httpx's and httpcore's log lines name the request URL with its
    user:password@ and query string, and httpcore's debug lines quote a malformed header (a key read with
    its line ending) whole. pytest shows them under --log-level, log_cli, log_file and junit_logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = [os.environ.get(n) or "" for names in KEY_ENVS.values() for n in names]
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report
            return True
        clean = scrub(message, secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), secrets)
        return True


def _secrets(client: Any) -> tuple[str, ...]:
    values = [getattr(client, "api_key", None), getattr(client, "auth_token", None)]
    values += [os.environ.get(n) for names in KEY_ENVS.values() for n in names]
    # NO_KEY is the public placeholder a keyless server accepts: masking it would blank the word in answers
    return tuple(sorted({v for v in values if isinstance(v, str) and v and v != NO_KEY}, key=len, reverse=True))


# ---------------------------------------------------------------------- clients
def _endpoint(entry: "ModelEntry", settings: "BackendSettings") -> tuple[tuple[str | None, ...], str | None]:
    """(base URLs, api_key) for the SDK; None lets it read its own environment variables."""
    if is_smoke(entry.weights):
        return (_smoke_url(entry.backend),), SMOKE_KEY
    if entry.backend != "openai-compatible":
        return (None,), None
    if settings.base_url:  # servers named on the command line get their own key, never OpenAI's
        return server_urls(settings.base_url), os.environ.get(COMPAT_KEY_ENV) or NO_KEY
    return (None,), os.environ.get("OPENAI_API_KEY") or NO_KEY  # the SDK's OPENAI_BASE_URL + key pair


def ignored_base_url(entry: "ModelEntry", settings: "BackendSettings") -> str | None:
    """The note for a --base-url that this model does not use (only openai-compatible models go to
    the servers it names), so that a run does not look as if it had asked them."""
    if not settings.base_url:
        return None
    if is_smoke(entry.weights):
        return f"--base-url ignored: {entry.name} is a smoke model, answered by the loopback stand-in"
    if entry.backend != "openai-compatible":
        return f"--base-url ignored: {entry.name} uses the {entry.backend} API (only openai-compatible models use it)"
    return None


def unsent_key(entry: "ModelEntry", settings: "BackendSettings") -> str | None:
    """The note for a key that never leaves: httpx turns a server URL's user:password@ into HTTP Basic
    auth, whose Authorization header replaces the SDK's `Bearer <key>` (a vLLM started with --api-key
    then answers 401)."""
    if not settings.base_url or is_smoke(entry.weights) or entry.backend != "openai-compatible":
        return None
    if not os.environ.get(COMPAT_KEY_ENV):
        return None
    with_user = [u for u in server_urls(settings.base_url) if urllib.parse.urlsplit(u).username is not None]
    if not with_user:
        return None
    return (f"{COMPAT_KEY_ENV} not sent to {redact_urls(with_user[0])}"
            + (f" (and {len(with_user) - 1} more)" if len(with_user) > 1 else "")
            + ": its user:password@ becomes HTTP Basic auth, which replaces the key's Bearer header")


def _client(sdk: Any, entry: "ModelEntry", settings: "BackendSettings", base_url: str | None,
            api_key: str | None) -> Any:
    cap = float(settings.extra.get("max_retry_after_s", MAX_RETRY_AFTER_S))
    http = sdk.DefaultHttpxClient(event_hooks={"response": [_cap_retry_after(cap)]})
    cls = sdk.Anthropic if entry.backend == "anthropic" else sdk.OpenAI
    # None: the SDK reads its own variable, whose query string needs the same care as a --base-url's
    env_url = os.environ.get("ANTHROPIC_BASE_URL" if entry.backend == "anthropic" else "OPENAI_BASE_URL")
    split, query = split_query(base_url if base_url is not None else env_url)
    base_url = split if query else base_url
    return cls(base_url=base_url, api_key=api_key, max_retries=settings.max_retries,
               timeout=settings.timeout_s, http_client=http, default_query=query or None)


def split_query(url: str | None) -> tuple[str | None, dict[str, str]]:
    """A server URL's query string (`?api-version=...`, a gateway's `?token=...`) as the SDK's
    `default_query`, sent with every request: left in the base URL, the SDK appends the path after
    it (`/v1?token=x/chat/completions`) and the server answers 404."""
    if not url:
        return url, {}
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url, {}
    return urllib.parse.urlunsplit(parts._replace(query="")), dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))


def _smoke_url(backend: str) -> str:
    from ..smoke.api_server import shared_server

    root = shared_server().url
    return root if backend == "anthropic" else f"{root}/v1"


def retry_after_s(headers: Any) -> float | None:
    """Seconds a response asks us to wait (`retry-after-ms`, then `Retry-After` seconds or date)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) / scale
        except (TypeError, ValueError):
            pass
    when = email.utils.parsedate_tz(headers.get("retry-after") or "")
    return None if when is None else email.utils.mktime_tz(when) - time.time()


def _cap_retry_after(cap_s: float) -> Callable[[Any], None]:
    """An httpx response hook: a wait above the cap turns into the SDKs' own "do not retry" header."""

    def hook(response: Any) -> None:
        wait = retry_after_s(response.headers)
        if wait is not None and wait > cap_s:
            response.headers["x-should-retry"] = "false"

    return hook


# ---------------------------------------------------------------------- the backend
class ApiBackend:
    """Sends one request per query, `settings.concurrency` at a time; answers keep the input order."""

    kind = "text"

    def __init__(self, entry: "ModelEntry", settings: "BackendSettings", pool: Pool, protocol: Any) -> None:
        self.entry, self.settings = entry, settings
        self._pool, self._protocol = pool, protocol
        self._secrets = tuple(sorted({x for s in pool.servers for x in _secrets(s.client)}, key=len, reverse=True))
        urls = [s.url for s in pool.servers] + [os.environ.get(n) for n in URL_ENVS]
        self._error_secrets = tuple(sorted({*self._secrets, *url_secrets(urls)}, key=len, reverse=True))
        self._fatal: RuntimeError | None = None  # the error that ends the case (Unavailable: skipped)
        self._ranks = api_rank.Tally()
        self._stand_in = False  # a reply of this case came from vlmcls's stub server

    def begin_case(self) -> None:
        """The runner calls it as a case begins: its notes count that case's answers and requests only."""
        self._ranks = api_rank.Tally()
        self._stand_in = False
        self._pool.begin_case()

    @property
    def stand_in(self) -> bool:
        """The case's answers (some or all) came from vlmcls's stub server, whatever the catalog calls the
        model (e.g. the README's rehearsal against `python -m vlmcls stub-server`): its row is smoke."""
        return self._stand_in

    @property
    def notes(self) -> list[str]:
        said = [n for n in (ignored_base_url(self.entry, self.settings), unsent_key(self.entry, self.settings)) if n]
        # an entry already smoke (`smoke:openai`, ...) is marked so: the note is for one the catalog calls a model
        marked = self.entry.smoke or is_smoke(self.entry.weights)
        stand_in = [STAND_IN_NOTE] if self._stand_in and not marked else []
        return said + stand_in + self._pool.notes() + self._ranks.notes()

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        if self._fatal:
            raise type(self._fatal)(str(self._fatal))
        if not queries:
            return []
        workers = max(1, min(self.settings.concurrency, len(queries)))
        with ThreadPoolExecutor(workers, thread_name_prefix="vlmcls-api") as pool:
            answers = list(pool.map(self._answer_one, queries))
        if self._protocol.rank and self._ranks.unavailable():
            self._fatal = self._fatal or self._no_ranking("the server sent no logprobs with its answers "
                                                          "(the model does not provide them)")
        if self._fatal:
            raise type(self._fatal)(str(self._fatal))
        return answers

    def _no_ranking(self, why: str) -> Unavailable:
        return Unavailable(f"{self.entry.name}: {NO_RANKING} for this model: {why}")

    def close(self) -> None:
        self._pool.close()

    def _answer_one(self, query: Query) -> Answer:
        start = time.monotonic()
        if self._fatal:  # a 401/403/404 already came back: do not send the rest
            return Answer(error="not sent: the backend failed")
        try:
            reply = self._send(self._protocol.request(query))
        except Exception as exc:  # noqa: BLE001 - a per-sample failure becomes an error row
            error = self._describe(exc)
            status = getattr(exc, "status_code", None)
            if status in FATAL_STATUS:
                self._fatal = RuntimeError(f"{self.entry.name}: {error}")
            elif status == 400 and self._protocol.rank and "logprob" in error.lower():  # e.g. reasoning models
                self._fatal = self._no_ranking(f"the server refused logprobs ({error})")
            return Answer(error=error, latency_s=time.monotonic() - start)
        return self._to_answer(query, reply, time.monotonic() - start)

    def _send(self, kwargs: dict[str, Any]) -> Reply:
        """One try per server until one answers; a server's fault moves the request to another."""
        tried: list[Server] = []
        while (server := self._pool.acquire(tried)) is not None:
            tried.append(server)
            try:
                reply = self._send_to(server.client, kwargs)
            except Exception as exc:
                if self._pool.release(server, exc) and len(tried) < len(self._pool.servers):
                    continue  # the server failed, not the request: another one may answer it
                raise
            self._pool.release(server, None)
            return reply
        raise AssertionError("unreachable: the last server's error is raised")  # pragma: no cover

    def _send_to(self, client: Any, kwargs: dict[str, Any]) -> Reply:
        """The SDK's call, plus the one retry it lacks: a malformed 200 body (bounded, short backoff)."""
        retries = max(0, self.settings.max_retries)
        for attempt in range(retries + 1):
            try:
                return self._protocol.send(client, kwargs)
            except (json.JSONDecodeError, Malformed):
                if attempt == retries:
                    raise
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def _to_answer(self, query: Query, reply: Reply, latency_s: float) -> Answer:
        if reply.stand_in:
            self._stand_in = True
        text = mask(reply.text, self._secrets)
        common = {"latency_s": latency_s, "prompt_tokens": reply.prompt_tokens, "stand_in": reply.stand_in,
                  "completion_tokens": reply.completion_tokens,
                  "cost_usd": estimate_cost(self.entry, reply.prompt_tokens, reply.completion_tokens)}
        if self._protocol.constrained:
            ids = [cid for cid, label in zip(query.class_ids, query.labels) if label == text.strip()]
            if len(ids) == 1:  # two candidates sharing the label: leave it to the resolver
                return Answer(text=text.strip(), class_id=ids[0], stage="constrained", **common)
        if self._protocol.rank:
            ranking = api_rank.rank(text, reply.first, query.labels, query.class_ids)
            self._ranks.add(len(query.labels), ranking)
            if ranking.top5:
                return Answer(text=text, class_id=ranking.top5[0], stage="rank", top5=ranking.top5,
                              top1_prob=ranking.top1_prob, **common)
        return Answer(text=text, **common)

    def _describe(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        head = f"HTTP {status}" if status else type(exc).__name__
        message = str(exc) or type(exc).__name__
        if status is None:  # no reply (refused, cut, timed out): say which server, the SDK's text does not
            message += _server_of(exc)
        return scrub(f"{head}: {message}", self._error_secrets)[:ERROR_CHARS]


def _server_of(exc: BaseException) -> str:
    """" (http://host:port/v1/...)" of the request an SDK exception carries (httpx's), without its query
    string; "" when there is none."""
    url = getattr(getattr(exc, "request", None), "url", None)
    if url is None or not getattr(url, "host", None):
        return ""
    port = f":{url.port}" if url.port else ""
    return f" ({url.scheme}://{url.host}{port}{url.path})"
