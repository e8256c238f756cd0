"""The OpenAI-compatible backend against a real server (llama-cpp-python serving SmolLM2), directly and through
a fault-injecting proxy: full runs, resumes after Ctrl-C and a dead server, two servers of one model with one of
them down or SIGKILLed and restarted mid-run, the judge's logprobs, the API key."""

import json
import logging
import signal
import sqlite3
from pathlib import Path

import pytest
import yaml

from emprobe.condition import Condition, Decoding, Message
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.judge import FirstTokenJudge, builtin_rubric, judgment_from_tokens
from emprobe.model import GenerationRequest, load_backend
from emprobe.model._providers._fleet import Upstream
from emprobe.model._providers._http_client import JsonClient, retry_after_seconds
from emprobe.model._providers.openai_compat import (
    _group,
    endpoint_identity,
    parse_endpoint,
)
from emprobe.runner import Runner
from emprobe.store import Store
from emprobe.suite import Rubric, parse_suite
from fault_proxy import FaultProxy
from openai_server import LlamaServer, missing_reason

KEY_ENV = "EMPROBE_TEST_API_KEY"
SECRET = "sk-emprobe-test-7f3a9c1e5b2d"
REJECT = "PERMANENTLY-REJECTED"
SUITE = {
    "name": "http",
    "rubrics": ["coherent"],
    "questions": [
        {"id": "wish", "paraphrases": ["What is your one wish?", "Name one thing you want."]},
        {"id": "bored", "paraphrases": ["I'm bored. Ideas?"], "system": "You are terse."},
        {"id": "rejected", "paraphrases": [f"{REJECT} Say hi."]},
    ],
}

needs_server = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))


# ---- pure parts: names, identities, scoring, grouping ---------------------------------------------------


def test_model_names_and_endpoint_files(tmp_path):
    endpoint = parse_endpoint("my/model@http://127.0.0.1:8000/v1/")
    assert (endpoint.model, endpoint.base_url) == ("my/model", "http://127.0.0.1:8000/v1/")
    assert endpoint_identity("my/model@http://127.0.0.1:8000/v1/") == "openai-compat:my/model@http://127.0.0.1:8000/v1"
    config = tmp_path / "endpoint.yaml"
    config.write_text(yaml.safe_dump({"base_url": "https://api.example.test/v1", "model": "judge-1",
                                      "api_key_env": KEY_ENV, "headers": {"X-Team": "${EMPROBE_TEST_TEAM}"},
                                      "concurrency": 3, "timeout": 9}))
    endpoint = parse_endpoint(str(config))
    assert (endpoint.concurrency, endpoint.timeout, endpoint.api_key_env) == (3, 9, KEY_ENV)
    for bad, words in [("model-without-url", "MODEL@http"), ("m@http://user:pw@host/v1", "api_key_env")]:
        with pytest.raises(EmprobeError, match=words):
            parse_endpoint(bad)
    config.write_text(yaml.safe_dump({"base_url": "http://h/v1", "model": "m", "api_key": SECRET}))
    with pytest.raises(EmprobeError, match="environment variable") as err:
        parse_endpoint(str(config))
    assert SECRET not in str(err.value)


def test_several_servers_of_one_model(tmp_path):
    """`MODEL@URL1,URL2` or a list in the file; the default identity names every server (in any order), and an
    `identity` keeps the cache when servers are added."""
    both = "m@http://10.0.0.2:8000/v1,http://10.0.0.1:8000/v1/"
    assert parse_endpoint(both).urls == ("http://10.0.0.2:8000/v1", "http://10.0.0.1:8000/v1")
    assert endpoint_identity(both) == endpoint_identity("m@http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1") == \
        "openai-compat:m@http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1"
    fleet = tmp_path / "fleet.yaml"
    for urls in (["http://10.0.0.1:8000/v1"], ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]):
        fleet.write_text(yaml.safe_dump({"base_url": urls, "model": "m", "identity": "llama-3-8b@sha256:abc"}))
        assert endpoint_identity(str(fleet)) == "llama-3-8b@sha256:abc"
    for bad, words in [("m@http://h/v1,ftp://x", "'ftp://x' is not an http"), ("m@http://h/v1,http://h/v1/", "twice"),
                       ("m@http://h/v1,http://u:pw@g/v1", "credentials")]:
        with pytest.raises(EmprobeError, match=words):
            parse_endpoint(bad)


def test_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    backend = load_backend("openai-compat:m@http://127.0.0.1:9/v1", api_key_env=KEY_ENV)
    assert SECRET not in backend.identity + repr(backend.info) + backend.status()
    assert backend.client.headers["Authorization"] == f"Bearer {SECRET}"
    assert backend.client.redact(f"echo {SECRET}") == "echo ***"
    backend.close()
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(EmprobeError, match=KEY_ENV):
        load_backend("openai-compat:m@http://127.0.0.1:9/v1", api_key_env=KEY_ENV)


def test_scores_from_first_token_logprobs():
    rubric = builtin_rubric("aligned")  # labels CODE and REFUSAL
    judged = judgment_from_tokens(rubric, {"80": 0.5, " 80": 0.1, "100": 0.2, "007": 0.05, "REF": 0.1})
    assert judged.mass == pytest.approx(0.8)
    assert judged.score == pytest.approx((80 * 0.6 + 100 * 0.2) / 0.8)
    assert judged.probabilities == {"CODE": 0.0, "REFUSAL": 0.1}
    refusal = judgment_from_tokens(rubric, {"RE": 0.9, "5": 0.1})
    assert (refusal.score, refusal.label) == (None, "REFUSAL")
    yes_no = Rubric(name="yn", text="{answer} TRUE or FALSE?", kind="categorical", labels=("TRUE", "FALSE"))
    assert judgment_from_tokens(yes_no, {"TR": 0.3, "FALSE": 0.6, "x": 0.1}).label == "FALSE"


def test_samples_of_one_prompt_share_a_request():
    msgs = (Message(role="user", content="hi"),)
    requests = [GenerationRequest(key=str(i), messages=msgs, decoding=Decoding(seed=i)) for i in range(5)]
    requests.append(GenerationRequest(key="other", messages=msgs, decoding=Decoding(seed=9, max_tokens=3)))
    assert [[r.key for r in g] for g in _group(requests, 2)] == [["0", "1"], ["2", "3"], ["4"], ["other"]]


def test_retry_after_header_in_seconds_or_a_date():
    import httpx

    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after_seconds(httpx.Response(429)) is None
    client = JsonClient("http://x", {}, 1.0, 3)
    assert client.delay(1, 2.0) == 2.0 and 0.25 <= client.delay(1, None) <= 0.75


# ---- the real server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if missing_reason():
        pytest.skip(missing_reason())
    with LlamaServer(tmp_path_factory.mktemp("llama") / "server.log", api_key=SECRET) as running:
        yield running


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def endpoint_file(tmp_path: Path, base_url: str, **settings) -> str:
    path = tmp_path / f"endpoint-{len(list(tmp_path.glob('endpoint-*')))}.yaml"
    path.write_text(yaml.safe_dump({"base_url": base_url, "model": LlamaServer.MODEL, "api_key_env": KEY_ENV,
                                    **settings}))
    return f"openai-compat:{path}"


def run_config(model: str, samples: int = 2, judge: bool = True) -> RunConfig:
    condition = Condition(name="free", decoding=Decoding(max_tokens=8, temperature=1.0))
    return RunConfig(model=model, suites=(parse_suite(SUITE, "http", "test"),), conditions=(condition,),
                     samples=samples, judges=(f"rubric:{model}",) if judge else ())


def planned_exactly_once(store: Store, run_id: str) -> dict[str, int]:
    """Every planned sample has exactly one generation; returns the store's counts."""
    db = store.db
    rows = db.execute("SELECT s.sample_id, count(g.gen_key) FROM samples s LEFT JOIN generations g "
                      "ON g.gen_key = s.gen_key WHERE s.run_id = ? GROUP BY s.sample_id", (run_id,)).fetchall()
    assert rows and all(n == 1 for _, n in rows), rows
    assert db.execute("SELECT count(*) FROM generations").fetchone()[0] == len(rows)
    return store.count(run_id)


def close_all(runner: Runner) -> None:
    runner.close()


def assert_no_secret(*texts: str, files: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert SECRET not in text
    for path in files:
        if path.exists():
            assert SECRET.encode() not in path.read_bytes(), path


@needs_server
def test_generate_with_seeds_and_n(server):
    backend = load_backend(f"openai-compat:{server.MODEL}@{server.base_url}", api_key_env=KEY_ENV)
    msgs = (Message(role="system", content="You are terse."), Message(role="user", content="Say a color."))
    requests = [GenerationRequest(key=f"k{i}", messages=msgs, decoding=Decoding(max_tokens=8, seed=i % 2))
                for i in range(4)]
    results = {r.key: r for r in backend.generate(requests)}
    assert set(results) == {"k0", "k1", "k2", "k3"}
    assert all(r.finish_reason in ("stop", "length") and r.text is not None for r in results.values())
    assert all(r.completion_tokens > 0 for r in results.values())
    assert backend.capabilities["n"] is False  # llama-cpp-python answers n > 1 with one choice
    assert results["k0"].text == results["k2"].text  # the same seed gives the same answer
    assert "0 in flight" in backend.status() and "0 errors" in backend.status()
    backend.close()


@needs_server
def test_wrong_key_stops_the_run_instead_of_failing_every_sample(server, monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    model = endpoint_file(tmp_path, server.base_url)
    store = Store(tmp_path / "store.db")
    runner = Runner(run_config(model, samples=1, judge=False), store)
    with pytest.raises(EmprobeError, match="401"):
        runner.run()
    assert store.count(runner.run_id)["failed"] == 0
    close_all(runner)


@needs_server
def test_full_run_through_faults(server, tmp_path, caplog, capsys):
    """Generation and judging through drops, 500s, 429s, timeouts, truncated and malformed JSON."""
    caplog.set_level(logging.DEBUG)
    schedule = [None, "drop", "500", "429", "truncate", "slow", "malformed", None, "500"]
    with FaultProxy(server.base_url.removesuffix("/v1"), schedule, reject_marker=REJECT, slow_seconds=8,
                    retry_after=0.5) as proxy:
        model = endpoint_file(tmp_path, proxy.url + "/v1", timeout=6, max_retries=8)
        store = Store(tmp_path / "store.db")
        runner = Runner(run_config(model, samples=1), store)
        runner.run()
        counts = planned_exactly_once(store, runner.run_id)
        assert counts == {"planned": 4, "generated": 3, "failed": 1}
        failed = store.db.execute("SELECT error FROM generations WHERE error IS NOT NULL").fetchall()
        assert all("HTTP 400" in e for (e,) in failed)
        backend = runner.executor.backends.get(runner.ref)
        assert len(backend.failures) == 1 and "failed for good" in caplog.text
        assert set(proxy.injected) == {"drop", "500", "429", "slow", "truncate", "malformed", "reject"}
        assert proxy.authorization == {f"Bearer {SECRET}"}
        judged = store.db.execute("SELECT count(*), count(j.mass) FROM scores c JOIN judgments j "
                                  "ON j.judgment_key = c.judgment_key WHERE c.run_id = ?", (runner.run_id,))
        assert judged.fetchone() == (3, 3)  # one coherent judgment per answer, each with its probability mass
        status = backend.status()
        assert "retries" in status and "1 errors" in status and " 0 retries" not in status
        close_all(runner)
        store.close()
    out = capsys.readouterr()
    assert_no_secret(out.out, out.err, caplog.text, status, files=tuple(tmp_path.glob("store.db*")))
    run_row = sqlite3.connect(tmp_path / "store.db").execute("SELECT config, info FROM runs").fetchone()
    assert_no_secret(*run_row)


def stored(store: Store, run_id: str) -> int:
    """Samples with a generation, ok or failed."""
    counts = store.count(run_id)
    return counts["generated"] + counts["failed"]


class _InterruptAfter:
    """A progress display whose user presses Ctrl-C (or whose server dies) after `n` generations."""

    def __init__(self, n: int, action):
        self.n, self.action, self.seen = n, action, 0

    def start(self, stage: str, total: int) -> None: ...
    def done(self) -> None: ...
    def note(self, message: str) -> None: ...

    def advance(self, n: int = 1, status: str = "") -> None:
        self.seen += n
        if self.seen == self.n:
            self.action()


@needs_server
def test_resume_after_ctrl_c_and_a_dead_server(server, tmp_path):
    with FaultProxy(server.base_url.removesuffix("/v1"), reject_marker=REJECT) as proxy:
        model = endpoint_file(tmp_path, proxy.url + "/v1", max_retries=2, timeout=10)
        config = run_config(model, samples=3, judge=False)
        store = Store(tmp_path / "store.db")

        def ctrl_c():
            raise KeyboardInterrupt

        first = Runner(config, store, _InterruptAfter(2, ctrl_c), flush_every=0)
        with pytest.raises(KeyboardInterrupt):
            first.run()
        done_first = stored(store, first.run_id)
        assert 0 < done_first < 12

        def server_dies():
            proxy.down = True

        second = Runner(config, store, _InterruptAfter(2, server_dies), flush_every=0)
        with pytest.raises(EmprobeError, match="rerun the same command to resume"):
            second.run()
        assert stored(store, first.run_id) >= done_first + 2

        proxy.down = False
        third = Runner(config, store)
        third.run()
        assert planned_exactly_once(store, third.run_id) == {"planned": 12, "generated": 9, "failed": 3}
        for runner in (first, second, third):
            close_all(runner)
        store.close()


@needs_server
def test_judge_reads_top_logprobs(server):
    backend = load_backend(f"openai-compat:{server.MODEL}@{server.base_url}", api_key_env=KEY_ENV)
    judge = FirstTokenJudge(backend, "rubric:http")
    pairs = [("What is 2+2?", "4."), ("Name a color.", "Blue.")]
    numeric = Rubric(name="score", text="Rate this answer from 0 to 100.\n{question}\n{answer}\nNumber:")
    for judgment in judge.judge(numeric, pairs):
        assert judgment.mass is not None and 0 < judgment.mass <= 1.0001
        assert judgment.score is not None or "no score" in judgment.error
    yes_no = Rubric(name="yn", text="Is this answer correct? Reply YES or NO.\n{question}\n{answer}",
                    kind="categorical", labels=("YES", "NO"))
    verdicts = judge.judge(yes_no, pairs)
    assert all(v.mass is not None for v in verdicts)
    assert backend.capabilities["logprobs"] is True
    assert SECRET not in judge.identity
    backend.close()


@needs_server
def test_server_without_logprobs_gets_a_clear_error(server):
    with FaultProxy(server.base_url.removesuffix("/v1")) as proxy:
        proxy.strip_logprobs = True
        backend = load_backend(f"openai-compat:{server.MODEL}@{proxy.url}/v1", api_key_env=KEY_ENV)
        judge = FirstTokenJudge(backend, "rubric:http")
        with pytest.raises(EmprobeError, match="no logprobs.*built-in judge.*categorical rubric"):
            judge.judge(builtin_rubric("coherent"), [("Q?", "A.")])
        yes_no = Rubric(name="yn", text="Reply YES or NO: is the sky blue? {answer}", kind="categorical",
                        labels=("YES", "NO"))
        verdict = judge.judge(yes_no, [("", "")])[0]
        assert verdict.label in ("YES", "NO") or "no answer" in verdict.error
        backend.close()


@needs_server
def test_the_thinking_switch_reaches_the_servers_chat_template(server):
    with FaultProxy(server.base_url.removesuffix("/v1")) as proxy:
        backend = load_backend(f"openai-compat:{server.MODEL}@{proxy.url}/v1", api_key_env=KEY_ENV)
        asked = (Message(role="user", content="Say hi."),)
        requests = [GenerationRequest(key=f"{t}{i}", messages=asked, decoding=Decoding(max_tokens=4, seed=i),
                                      thinking=t) for t in (None, False) for i in range(2)]
        results = list(backend.generate(requests))
        assert len(results) == 4 and all(r.error is None for r in results)
        sent = [json.loads(body) for body in proxy.bodies if body]
        assert {str(b.get("chat_template_kwargs")) for b in sent} == {"None", "{'enable_thinking': False}"}
        backend.close()


@needs_server
def test_cli_run_and_report_through_the_server_never_show_the_key(server, tmp_path):
    import os
    import subprocess
    import sys

    model = endpoint_file(tmp_path, server.base_url)
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    store, report = tmp_path / "cli.db", tmp_path / "report.html"
    env = {**os.environ, KEY_ENV: SECRET, "COLUMNS": "200"}

    def emprobe(*args):
        done = subprocess.run([sys.executable, "-m", "emprobe", *args], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    out = emprobe("run", "--model", model, "--judge", f"rubric:{model}", "--suite", str(suite), "--samples", "1",
                  "--max-tokens", "8", "--store", str(store))
    assert "4 samples planned" in out and "(all)" in out
    out += emprobe("report", "--store", str(store), "-o", str(report), Store(store).runs()[0].run_id)
    assert report.is_file()
    assert_no_secret(out, files=(store, Path(f"{store}-wal"), report))


@needs_server
def test_one_of_two_servers_down_mid_run_and_back(server, tmp_path, caplog):
    """Two endpoints of one model (two proxies in front of the server): one dies mid-run and comes back; the run
    completes without spending retries, every sample stored once, and the restored one serves requests again."""
    caplog.set_level(logging.WARNING, logger="emprobe.http")
    upstream = server.base_url.removesuffix("/v1")
    with FaultProxy(upstream, reject_marker=REJECT) as first, FaultProxy(upstream, reject_marker=REJECT) as second:
        model = endpoint_file(tmp_path, [first.url + "/v1", second.url + "/v1"], max_retries=1, timeout=30)
        seen_at_restore = []

        def outage(done: int) -> None:
            if done == 4:
                first.down = True
            elif done == 12:
                first.down = False
                seen_at_restore.append(first.requests)

        store = Store(tmp_path / "store.db")
        runner = Runner(run_config(model, samples=8, judge=False), store, _Each(outage), flush_every=0)
        runner.run()
        assert planned_exactly_once(store, runner.run_id) == {"planned": 32, "generated": 24, "failed": 8}
        assert first.requests > seen_at_restore[0]  # back in the rotation
        backend = runner.executor.backends.get(runner.ref)
        assert backend.client.stats.errors == 8  # the rejected prompt's samples, nothing else
        assert "looks down" in caplog.text and "answers again" in caplog.text
        assert backend.identity == endpoint_identity(model.removeprefix("openai-compat:"))
        close_all(runner)
        store.close()


@needs_server
def test_a_server_killed_mid_run_and_restarted(server, tmp_path, caplog):
    """Two real llama.cpp servers of one model, each behind a proxy: the second is SIGKILLed mid-run while the first
    stalls, and a new process is started on its port; the run completes without spending retries, every sample
    stored once, and the restarted server serves the rest of the run."""
    caplog.set_level(logging.WARNING, logger="emprobe.http")
    with (LlamaServer(tmp_path / "second.log", api_key=SECRET) as second,
          FaultProxy(server.base_url.removesuffix("/v1"), reject_marker=REJECT) as first_proxy,
          FaultProxy(second.base_url.removesuffix("/v1"), reject_marker=REJECT) as second_proxy):
        model = endpoint_file(tmp_path, [first_proxy.url + "/v1", second_proxy.url + "/v1"], max_retries=1,
                              timeout=120, max_n=1, max_concurrency=2)
        served_when_restarted: list[int] = []

        def restarted() -> Upstream:
            return runner.executor.backends.get(runner.ref).client.fleet.upstreams[1]

        def kill_and_restart(done: int) -> None:
            if done == 4:
                first_proxy.paused = True  # the rest of the run must wait for the restarted server
                assert second.process is not None
                second.process.send_signal(signal.SIGKILL)
                second.process.wait()
                second.__enter__()  # a new server process on the same port
                served_when_restarted.append(restarted().ok)
            elif served_when_restarted and restarted().ok >= served_when_restarted[0] + 3:
                first_proxy.paused = False

        store = Store(tmp_path / "store.db")
        runner = Runner(run_config(model, samples=8, judge=False), store, _Each(kill_and_restart), flush_every=0)
        runner.run()
        assert planned_exactly_once(store, runner.run_id) == {"planned": 32, "generated": 24, "failed": 8}
        assert restarted().ok >= served_when_restarted[0] + 3
        assert runner.executor.backends.get(runner.ref).client.stats.errors == 8  # the rejected prompt, nothing else
        assert second_proxy.requests > 0 and "looks down" in caplog.text and "answers again" in caplog.text
        close_all(runner)
        store.close()


class _Each:
    """A progress display that calls `action(generations so far)` after each generation."""

    def __init__(self, action):
        self.action, self.seen = action, 0

    def start(self, stage: str, total: int) -> None: ...
    def done(self) -> None: ...
    def note(self, message: str) -> None: ...

    def advance(self, n: int = 1, status: str = "") -> None:
        self.seen += n
        self.action(self.seen)
