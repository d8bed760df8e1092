"""The servers of one deployment behind an API backend: each request goes to the server with the
fewest requests in flight (ties: the one sent the fewest); a server that fails a request after the
SDK's retries is taken out for a cool-down, then re-admitted on probation (one request at a time
until one succeeds). See vlmcls.backends.api for how a request moves between servers.
"""
from __future__ import annotations

import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Sequence

COOLDOWN_S = 30.0  # a failed server's time out; override with options.server_cooldown_s


def display_url(url: str) -> str:
    """A server URL fit for a report: scheme, host, port and path only (no user:password@, no query)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", "")) or url


@dataclass
class Server:
    """One server and what happened to it (changed only under the pool's lock)."""

    url: str
    client: Any
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    outages: int = 0  # times taken out
    down_until: float = 0.0
    suspect: bool = False  # failed, and has not answered since: one request at a time


class Pool:
    """The servers of one deployment: least requests in flight first, failed ones cooled down."""

    def __init__(self, servers: Sequence[Server], cooldown_s: float, faults: tuple[type, ...]) -> None:
        self.servers, self.cooldown_s, self.faults = list(servers), cooldown_s, faults
        self.clock: Callable[[], float] = time.monotonic  # tests end a cool-down without sleeping
        self._lock = threading.Lock()
        self._since: dict[int, tuple[int, int, int]] = {}  # each server's counts when the case began

    def begin_case(self) -> None:
        """The notes count from here: the cases of one model share its servers, not their tallies."""
        with self._lock:
            self._since = {id(s): (s.requests, s.errors, s.outages) for s in self.servers}

    def acquire(self, tried: Sequence[Server]) -> Server | None:
        """The server for a request's next try (None: it has tried them all)."""
        with self._lock:
            left = [s for s in self.servers if s not in tried]
            if not left:
                return None
            now = self.clock()
            ready = [s for s in left if self._admits(s, now)]
            # all taken out: try the one back soonest rather than fail a sample unasked
            best = min(ready, key=lambda s: (s.in_flight, s.requests)) if ready else min(left, key=lambda s: s.down_until)
            best.in_flight += 1
            best.requests += 1
            return best

    @staticmethod
    def _admits(s: Server, now: float) -> bool:
        # after its cool-down a failed server gets one probe at a time, not a burst of requests
        return not s.suspect or (now >= s.down_until and s.in_flight == 0)

    def release(self, server: Server, exc: BaseException | None) -> bool:
        """Record a try's outcome; True when the server, not the request, failed (try another)."""
        fault = exc is not None and self.is_fault(exc)
        with self._lock:
            server.in_flight -= 1
            if exc is None:
                server.suspect = False
            else:
                server.errors += 1
            if fault:
                now = self.clock()
                if not server.suspect or now >= server.down_until:
                    server.outages += 1
                server.suspect, server.down_until = True, now + self.cooldown_s
        return fault

    def is_fault(self, exc: BaseException) -> bool:
        """Unreachable, cut off, timed out, or 5xx after the SDK's own retries."""
        status = getattr(exc, "status_code", None)
        return isinstance(exc, self.faults) or (isinstance(status, int) and status >= 500)

    def close(self) -> None:
        for s in self.servers:
            s.client.close()

    def notes(self) -> list[str]:
        if len(self.servers) < 2:
            return []
        parts = []
        with self._lock:
            for s in self.servers:
                requests, errors, outages = (now - then for now, then in
                                             zip((s.requests, s.errors, s.outages), self._since.get(id(s), (0, 0, 0))))
                parts.append(f"{display_url(s.url)} {requests} requests, {errors} failed"
                             + (f", taken out {outages}x" if outages else ""))
        return ["servers (this case; a request that failed on one was sent to another): " + "; ".join(parts)]
