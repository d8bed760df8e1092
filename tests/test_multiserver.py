"""Several OpenAI-compatible servers behind one --base-url: least-in-flight routing, a server that
dies mid-run loses no sample, a failed server is cooled down and re-admitted. The real openai SDK
against loopback servers (vlmcls.smoke.api_server), no mocks."""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from vlmcls import backends, prompts
from vlmcls.backends import api
from vlmcls.backends.servers import Pool, Server
from vlmcls.catalog import ModelEntry
from vlmcls.labels import imagenet_labelset
from vlmcls.options import base_urls
from vlmcls.resolve import Resolver
from vlmcls.runner import CaseRunner, CaseSpec
from vlmcls.settings import BackendSettings, server_urls
from vlmcls.smoke.api_server import ApiServer, Reply
from vlmcls.store import Store
from vlmcls.types import Query, Sample

pytest.importorskip("openai")

SERVED = ModelEntry(name="fleet", backend="openai-compatible", weights="served-model")
LABELS = imagenet_labelset()


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", api.COMPAT_KEY_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def two():
    with ApiServer() as a, ApiServer() as b:
        yield a, b


def urls(*servers: ApiServer) -> str:
    return ",".join(f"{s.url}/v1" for s in servers)


def query(i: int) -> Query:
    labels = (f"cat{i}", f"dog{i}", f"fox{i}")
    image = Image.new("RGB", (32, 32), (i % 255, 90, 180))
    return Query(f"s{i}", image, (0, 1, 2), labels, prompts.render(prompts.get_template("thesis"), labels))


def load(*servers: ApiServer, **kw) -> api.ApiBackend:
    defaults = {"base_url": urls(*servers), "max_retries": 0, "timeout_s": 5.0, "concurrency": 2}
    return api.load(SERVED, BackendSettings(**{**defaults, **kw}), LABELS)


def stats(backend: api.ApiBackend) -> list[tuple[int, int, int]]:
    """(requests, errors, times taken out) per server, in --base-url order."""
    return [(s.requests, s.errors, s.outages) for s in backend._pool.servers]


def answered(server: ApiServer) -> int:
    return sum(r.status == 200 for r in server.records)


# ---------------------------------------------------------------------- the option and the store key
def test_base_url_takes_a_list_or_a_file(tmp_path):
    assert base_urls("http://a:8000/v1, http://b:8000/v1,http://a:8000/v1") == "http://a:8000/v1,http://b:8000/v1"
    listing = tmp_path / "servers.txt"
    listing.write_text("# the fleet\nhttp://a:8000/v1\n\n  http://b:8000/v1   # rack 2\n")
    assert base_urls(str(listing)) == "http://a:8000/v1,http://b:8000/v1"
    assert server_urls(base_urls(str(listing))) == ("http://a:8000/v1", "http://b:8000/v1")
    (tmp_path / "empty.txt").write_text("# nobody yet\n")
    for bad in ("gpu-box:8000/v1", "http://a/v1,gpu-box", str(tmp_path / "missing.txt"), str(tmp_path / "empty.txt")):
        with pytest.raises(argparse.ArgumentTypeError, match="--base-url"):
            base_urls(bad)


def test_base_url_at_file_gets_a_hint_since_pytest_expands_it_itself(tmp_path, monkeypatch):
    """`--base-url @servers.txt`: pytest's argparse replaces @FILE by the file's lines, so the option sees
    the first line (here a comment); the error says to drop the @. A plain missing file gets no hint."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(argparse.ArgumentTypeError, match=r"\(No such file or directory\); with --base-url @FILE "
                       r"pytest reads the file itself .*: write --base-url FILE$"):
        base_urls("# the fleet")
    with pytest.raises(argparse.ArgumentTypeError, match=r"cannot read 'servers.txt' \(No such file or directory\)$"):
        base_urls("servers.txt")


def test_store_key_ignores_the_order_of_the_servers():
    def key(base_url: str) -> dict:
        return CaseSpec(model=SERVED, ways=20, settings=BackendSettings(base_url=base_url)).key_fields()["settings"]

    assert key("http://a/v1,http://b/v1") == key("http://b/v1, http://a/v1,http://b/v1")
    assert key("http://a/v1")["base_url"] == "http://a/v1"  # one server keys exactly as before
    assert key("http://a/v1,http://b/v1") != key("http://a/v1")  # another deployment


def test_display_url_drops_credentials_and_query():
    assert api.display_url("http://user:pw@gpu-1:8000/v1?token=x") == "http://gpu-1:8000/v1"
    assert api.display_url("https://[::1]:9/v1") == "https://[::1]:9/v1"


# ---------------------------------------------------------------------- routing
def pool(*in_flight: int, requests=None, suspect=(), down_until=0.0) -> Pool:
    servers = [Server(f"http://s{i}/v1", None, n, (requests or [0] * len(in_flight))[i]) for i, n in enumerate(in_flight)]
    for i in suspect:
        servers[i].suspect, servers[i].down_until = True, down_until
    return Pool(servers, 30.0, (ConnectionError,))


def test_pool_picks_the_server_with_fewest_in_flight():
    p = pool(3, 1, 2)
    assert p.acquire([]).url == "http://s1/v1"
    assert [s.in_flight for s in p.servers] == [3, 2, 2]
    assert p.acquire([p.servers[1]]).url == "http://s2/v1"  # a server already tried is skipped
    assert pool(1, 1, requests=[5, 2]).acquire([]).url == "http://s1/v1"  # a tie: the one sent fewer


def test_pool_keeps_a_failed_server_out_then_probes_it_one_request_at_a_time():
    later = time.monotonic() + 60
    assert pool(0, 5, suspect=[0], down_until=later).acquire([]).url == "http://s1/v1"  # cooling down
    assert pool(0, 5, suspect=[0]).acquire([]).url == "http://s0/v1"  # cool-down over: a probe
    assert pool(1, 5, suspect=[0]).acquire([]).url == "http://s1/v1"  # a probe already in flight
    # every server out: the request still tries the one back soonest instead of failing unasked
    p = pool(0, 0, suspect=[0, 1], down_until=later)
    p.servers[1].down_until = later - 1
    assert p.acquire([]).url == "http://s1/v1"


def test_a_busy_server_gets_fewer_requests(two):
    a, b = two
    a.state.gate = threading.Event()  # a's replies wait: its requests stay in flight
    n = 20

    def open_gate_once_all_arrived():
        deadline = time.monotonic() + 20
        while len(a.records) + len(b.records) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        a.state.gate.set()

    threading.Thread(target=open_gate_once_all_arrived, daemon=True).start()
    backend = load(a, b, concurrency=4, timeout_s=30.0)
    answers = backend.answer([query(i) for i in range(n)])
    backend.close()
    assert all(a_.error is None for a_ in answers)
    # round-robin would send a 10 of the 20; least-in-flight sends it only the first one or two
    assert 1 <= len(a.records) <= 2 and len(b.records) == n - len(a.records)


# ---------------------------------------------------------------------- a server dies
def test_a_server_killed_mid_run_loses_no_sample(two, tmp_path):
    a, b = two
    a.kill_at(3)  # a's third request never gets a reply, and a stays dead
    settings = BackendSettings(base_url=urls(a, b), concurrency=4, max_retries=1, timeout_s=5.0)
    store = Store(tmp_path / "store.sqlite")
    spec = CaseSpec(model=SERVED, ways=20, settings=settings)
    backend = backends.load(SERVED, settings, LABELS)
    data = [Sample(f"s{i}", (i * 37) % 1000, _jpeg(i)) for i in range(24)]
    result = CaseRunner(spec, LABELS, backend, Resolver("exact", LABELS), store).run(data)
    backend.close()

    kill_time = a.records[-1].start
    assert len(a.records) == 3 and a.records[-1].status == 0
    assert any(r.start < kill_time and r.status == 200 for r in b.records)  # both served before the kill
    assert answered(a) >= 1
    assert sorted(p.sample_id for p in result.predictions) == sorted(s.sample_id for s in data)
    assert all(p.error is None for p in result.predictions) and not result.stopped
    assert store.count(CaseRunner(spec, LABELS, None, None, None).key) == 24  # one row per sample
    assert answered(a) + answered(b) == 24  # none lost, none answered twice
    (sent_a, failed_a, out_a), (sent_b, failed_b, out_b) = stats(backend)
    assert (out_a, failed_b, out_b) == (1, 0, 0) and sent_a == answered(a) + failed_a and sent_b == answered(b)
    (note,) = [n for n in result.notes if n.startswith("servers")]
    assert f"{a.url}/v1 {sent_a} requests, {failed_a} failed, taken out 1x; {b.url}/v1 {sent_b} requests, 0 failed" in note


def test_a_cooled_down_server_is_readmitted_when_it_comes_back(two):
    a, b = two
    now = [1000.0]
    a.kill()
    backend = load(a, b)
    backend._pool.clock = lambda: now[0]  # the cool-down ends when the test says, not after a sleep
    assert all(x.error is None for x in backend.answer([query(i) for i in range(4)]))
    assert stats(backend)[0] == (1, 1, 1)  # one try, moved to b, a taken out
    assert all(x.error is None for x in backend.answer([query(i) for i in range(4, 10)]))
    assert stats(backend)[0] == (1, 1, 1)  # while it cools down, a is not tried
    a.revive()
    now[0] += api.COOLDOWN_S + 1
    assert all(x.error is None for x in backend.answer([query(i) for i in range(10, 20)]))
    backend.close()
    assert answered(a) >= 2 and not backend._pool.servers[0].suspect  # back in the rotation


def test_when_every_server_is_down_each_request_tries_each_once(two):
    a, b = two
    a.kill()
    b.kill()
    backend = load(a, b, concurrency=1)
    answers = backend.answer([query(i) for i in range(3)])
    backend.close()
    assert all(x.error and x.error.startswith("APIConnectionError") for x in answers)
    assert [s[0] for s in stats(backend)] == [3, 3]  # bounded: never more than one try per server
    # the row names the server that failed last (the SDK's own text, "Connection error.", does not)
    servers = {f"({url}/chat/completions)" for url in server_urls(urls(a, b))}
    assert all(x.error.endswith(tuple(servers)) for x in answers), answers[0].error


def test_a_rejected_request_is_not_sent_to_the_other_server(two):
    a, b = two
    a.script(Reply(400))
    b.script(Reply(400))
    backend = load(a, b, concurrency=1)
    (answer,) = backend.answer([query(0)])
    backend.close()
    assert answer.error.startswith("HTTP 400") and len(a.records) + len(b.records) == 1
    assert not any(s.suspect for s in backend._pool.servers)  # the request failed, not the server


# ---------------------------------------------------------------------- as users run it
def test_pytest_bench_over_a_server_list_file_with_one_server_dying(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "test_classify.py").write_text((Path(__file__).parents[1] / "bench" / "test_classify.py").read_text())
    (tmp_path / "catalog.toml").write_text('[models.fleet]\nbackend = "openai-compatible"\nweights = "served-model"\n')
    with ApiServer() as a, ApiServer() as b:
        a.kill_at(4)
        (tmp_path / "servers.txt").write_text(f"# two vLLM machines\n{a.url}/v1\n{b.url}/v1\n")
        out = subprocess.run([sys.executable, "-m", "pytest", "bench", "--catalog", "catalog.toml", "--base-url", "servers.txt",
                              "--ways", "20", "--samples", "30", "--resolver", "exact", "--concurrency", "4",
                              "-p", "no:cacheprovider"], cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert answered(a) + answered(b) == 30 and answered(a) >= 1
    report = "\n".join(p.read_text() for p in (tmp_path / "reports").rglob("*.md"))
    assert f"{a.url}/v1 " in report and ", taken out 1x" in report and f"{b.url}/v1 " in report


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (i * 7 % 255, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


def test_a_url_with_user_and_password_sends_basic_auth_not_the_key_and_the_run_says_so(monkeypatch):
    """httpx makes a URL's user:password@ the Authorization header, replacing the SDK's Bearer key: the
    key reaches no server, and the case's notes say so (without the password)."""
    monkeypatch.setenv(api.COMPAT_KEY_ENV, "sk-fleetkey1234")
    with ApiServer() as plain, ApiServer() as guarded:
        with_user = guarded.url.replace("http://", "http://ops:hunter22@") + "/v1"
        backend = load(plain, base_url=f"{plain.url}/v1,{with_user}", concurrency=1)
        backend.answer([query(i) for i in range(4)])
        sent = {s: {r.headers.get("authorization") for r in s.records} for s in (plain, guarded)}
        notes = " ".join(backend.notes)
    assert sent[plain] == {"Bearer sk-fleetkey1234"}
    assert len(sent[guarded]) == 1 and next(iter(sent[guarded])).startswith("Basic ")
    assert f"{api.COMPAT_KEY_ENV} not sent to http://***@127.0.0.1" in notes and "Basic auth" in notes
    assert "hunter22" not in notes and "sk-fleetkey1234" not in notes


def test_no_key_note_without_a_key_or_without_credentials_in_the_url(monkeypatch):
    entry, creds = SERVED, BackendSettings(base_url="http://ops:pw@gpu-box:8000/v1")
    assert api.unsent_key(entry, creds) is None  # no key set: nothing is lost
    monkeypatch.setenv(api.COMPAT_KEY_ENV, "sk-fleetkey1234")
    assert api.unsent_key(entry, BackendSettings(base_url="http://gpu-box:8000/v1")) is None
    assert api.unsent_key(entry, BackendSettings()) is None
    two = BackendSettings(base_url="http://ops:pw@a:8000/v1,http://ops:pw@b:8000/v1")
    assert api.unsent_key(entry, two) == (f"{api.COMPAT_KEY_ENV} not sent to http://***@a:8000/v1 (and 1 more): its "
                                          "user:password@ becomes HTTP Basic auth, which replaces the key's Bearer header")
