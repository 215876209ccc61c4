"""L24: retries with backoff and jitter, fallbacks, prices, the scripted LLM server, and the agent API over HTTP.

Servers are real uvicorn on 127.0.0.1 (threads): two scripted LLMs (primary, fallback) and the API. Backoff
waits go through a fake sleep, so no test really sleeps; the LLM timeouts are real (a few tenths of a second).
The API's keys live in a temp key file: alice's client drives most tests; bob's and keyless ones probe the
boundaries (401 without a key, 404 for another owner's run, a 409 that leaks nothing, Host checked).
"""

import json
import logging
import random

import pytest

from mastery.agents.resilience import (
    FallbackChat,
    PriceTable,
    RetryingChat,
    RetryPolicy,
    RunCost,
    http_status,
    llm_retryable,
    load_price_table,
    parse_price_table,
    retry_call,
    retrying_tool,
)
from mastery.agents.types import AgentResult, Step, Tool
from mastery.core.errors import ConfigError
from mastery.eval.agent_api_fixtures import EXAMPLE_PRICES, FALLBACK_MODEL, PRIMARY_MODEL, demo_script, demo_tools
from mastery.llm.errors import LLMBadResponse, LLMModelNotFound, LLMServerDown, LLMTimeout
from mastery.llm.fake import ScriptedChat, in_order
from mastery.llm.scripted import Fault, ScriptedLLM, create_scripted_app
from mastery.serving.agent_client import api_client, wait_result
from mastery.serving.auth import KeyStore
from mastery.serving.server import ServerThread


# -- backoff, retries, fallbacks (no servers) ---------------------------------------------------------
def test_backoff_is_exponential_with_full_jitter():
    policy = RetryPolicy(attempts=6, base_s=0.5, max_s=3.0)
    assert [policy.cap(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    rng = random.Random(0)
    delays = [[policy.delay(k, rng) for _ in range(300)] for k in range(1, 5)]
    for k, d in enumerate(delays, start=1):
        assert min(d) >= 0 and max(d) <= policy.cap(k)
        assert max(d) > 0.8 * policy.cap(k) and min(d) < 0.2 * policy.cap(k)  # spread over [0, cap]: full jitter
    with pytest.raises(ConfigError):
        RetryPolicy(attempts=0).validate()


def test_retry_call_retries_only_what_may_succeed():
    sleeps: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise LLMTimeout("slow")
        return "ok"

    policy = RetryPolicy(attempts=3, base_s=1.0, max_s=8.0)
    assert retry_call(flaky, policy, retryable=llm_retryable, sleep=sleeps.append, rng=random.Random(1)) == "ok"
    assert len(sleeps) == 2 and sleeps[0] <= 1.0 and sleeps[1] <= 2.0
    calls["n"], sleeps[:] = -10, []
    with pytest.raises(LLMTimeout):  # attempts run out: the last error is raised
        retry_call(flaky, policy, retryable=llm_retryable, sleep=sleeps.append)
    assert len(sleeps) == 2

    def missing() -> str:
        raise LLMModelNotFound("no such model")

    sleeps.clear()
    with pytest.raises(LLMModelNotFound):
        retry_call(missing, policy, retryable=llm_retryable, sleep=sleeps.append)
    assert sleeps == []  # not retried
    calls["n"] = 0
    with pytest.raises(LLMTimeout):  # a wait that would end past the deadline is not taken
        retry_call(flaky, policy, retryable=llm_retryable, sleep=sleeps.append, deadline=0.5, clock=lambda: 0.0,
                   rng=random.Random(3))
    assert sleeps == [] or all(s < 0.5 for s in sleeps)


@pytest.mark.parametrize(("error", "retry"), [
    (LLMServerDown("refused"), True), (LLMTimeout("slow"), True),
    (LLMBadResponse("LLM server at x answered HTTP 503: busy"), True),
    (LLMBadResponse("LLM server at x answered HTTP 429: slow down"), True),
    (LLMBadResponse("LLM server at x answered HTTP 400: bad request"), False),
    (LLMBadResponse("unusable answer"), False), (LLMModelNotFound("model 'x' not found"), False),
    (ValueError("a bug"), False)])
def test_which_llm_errors_are_retried(error, retry):
    assert llm_retryable(error) is retry


def fake_chat(name: str, failures: list[Exception]) -> ScriptedChat:
    """The one fake as a backend that raises ``failures`` in turn, then answers "from <name>"."""
    return ScriptedChat(in_order(*failures, f"from {name}"), model=name)


def _usage(fake: ScriptedChat) -> dict[str, int]:
    done = [c["completion"] for c in fake.calls if "completion" in c]
    return {"prompt_tokens": sum(c.prompt_tokens for c in done),
            "completion_tokens": sum(c.completion_tokens for c in done), "calls": len(done)}


def test_retrying_chat_then_fallback_sticks():
    sleeps: list[float] = []
    primary, backup = fake_chat("p", [LLMTimeout("t")] * 3), fake_chat("f", [])
    policy = RetryPolicy(attempts=3, base_s=0.1)
    chat = FallbackChat([RetryingChat(primary, policy, name="p", sleep=sleeps.append),
                         RetryingChat(backup, policy, name="f", sleep=sleeps.append)])
    assert chat.chat("hi").text == "from f"
    assert chat.chat("again").text == "from f"  # sticky: the failed primary is not asked again in this run
    assert len(primary.calls) == 3 and len(sleeps) == 2
    assert chat.backend == "f" and chat.fallbacks == 2 and chat.backends[0].retries == 2
    assert chat.usage == {"f": _usage(backup)} and _usage(backup)["calls"] == 2 and _usage(primary)["calls"] == 0
    assert _usage(backup)["prompt_tokens"] > 0 and _usage(backup)["completion_tokens"] > 0

    recovering = RetryingChat(fake_chat("p", [LLMBadResponse("answered HTTP 503: x")]), policy, sleep=sleeps.append)
    assert recovering.chat("hi").text == "from p" and recovering.retries == 1 and len(recovering.errors) == 1
    dead = FallbackChat([fake_chat("a", [LLMModelNotFound("gone")]), fake_chat("b", [LLMServerDown("down")])],
                        names=["a", "b"])
    with pytest.raises(LLMServerDown):
        dead.chat("hi")
    assert len(dead.errors) == 2


def test_retrying_tool_retries_idempotent_tools_only():
    from mastery.agents.tools import call_tool

    attempts = {"n": 0}

    def flaky(args):
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ConnectionError("blip")
        return "fine"

    tool = Tool("t", "d", {"type": "object", "properties": {}}, flaky, timeout_s=1.0)
    seen = []
    wrapped = retrying_tool(tool, RetryPolicy(attempts=2, base_s=0.01), sleep=lambda s: None,
                            on_retry=lambda name, a, e: seen.append((name, a)))
    assert call_tool(wrapped, {}) == "fine" and seen == [("t", 1)] and wrapped.timeout_s > tool.timeout_s
    once = Tool("t", "d", {"type": "object", "properties": {}}, flaky, idempotent=False)
    assert retrying_tool(once, RetryPolicy(attempts=3)) is once


def test_price_table_files_and_costs(tmp_path, monkeypatch):
    toml = tmp_path / "prices.toml"
    toml.write_text('[models."gpt-4o-mini"]\nprompt_per_1m = 0.15\ncompletion_per_1m = 0.60\n'
                    '[models."claude-*"]\nprompt_per_1m = 1.0\ncompletion_per_1m = 5.0\n')
    table = load_price_table(toml)
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.lookup("claude-3-5-haiku")[1] and not table.lookup("qwen")[1] and table.cost("qwen", 10**6, 0) == 0
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps(EXAMPLE_PRICES))
    monkeypatch.setenv("MASTERY_PRICE_TABLE", str(as_json))
    assert load_price_table().models["gpt-4o"].completion_per_1m == 10.0
    assert load_price_table(env={}) == PriceTable()
    for bad in ('{"models": {"x": {"prompt_per_1m": -1}}}', '{"modles": {}}', '{"models": {"x": {"usd": 1}}}', "{"):
        as_json.write_text(bad)
        with pytest.raises(ConfigError):
            load_price_table(as_json)
    with pytest.raises(ConfigError):
        load_price_table(tmp_path / "missing.toml")
    result = AgentResult("q", "answered", "a", steps=[Step(1, "final", prompt_tokens=1000, completion_tokens=500)],
                         backend="gpt-4o-mini")
    cost = RunCost.from_result(result, parse_price_table(EXAMPLE_PRICES))
    assert cost.total_tokens == 1500 and cost.usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)


# -- the scripted LLM server -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def llms():
    primary, fallback = ScriptedLLM(demo_script(), model=PRIMARY_MODEL), ScriptedLLM(demo_script(),
                                                                                     model=FALLBACK_MODEL)
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # the dropped connection's traceback
    with ServerThread(create_scripted_app(primary)) as p, ServerThread(create_scripted_app(fallback)) as f:
        yield primary, fallback, p.url, f.url


def test_scripted_server_faults(llms):
    from mastery.llm.client import LLMClient
    from mastery.llm.settings import load_settings

    primary, _, url, _ = llms
    client = LLMClient(load_settings(env={}, backend="openai", base_url=url + "/v1", model=PRIMARY_MODEL,
                                     timeout_s=0.3), verify_model=False)
    assert client.models() == [PRIMARY_MODEL]
    answer = client.chat("What is 17 * 23?", tools=[t.openai_schema() for t in demo_tools()])
    assert answer.tool_calls[0]["name"] == "calculator" and answer.prompt_tokens > 0
    expected = {"http_500": LLMBadResponse, "http_503": LLMBadResponse, "drop": LLMServerDown, "delay": LLMTimeout}
    try:
        for kind, error in expected.items():
            primary.set_faults([Fault(kind, first=1, delay_s=0.6)])  # type: ignore[arg-type]
            with pytest.raises(error) as info:
                client.chat("hi")
            assert llm_retryable(info.value)
            assert client.chat("hi").text  # only the first call fails
        assert http_status(LLMBadResponse("answered HTTP 503: x")) == 503
        primary.set_faults([Fault("http_503", every=2)])
        outcomes = []
        for _ in range(4):
            try:
                client.chat("hi")
                outcomes.append("ok")
            except LLMBadResponse:
                outcomes.append("503")
        assert outcomes == ["ok", "503", "ok", "503"] and primary.outcomes == {"ok": 2, "http_503": 2}
    finally:
        primary.set_faults([])


# -- the agent API over HTTP ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A key file with alice's and bob's keys: ``(store, {owner: token})``."""
    store = KeyStore(tmp_path_factory.mktemp("keys") / "api-keys.json")
    return store, {owner: store.create(owner)[1] for owner in ("alice", "bob")}


def _app(db, p_url, f_url, keys, workers=2, queue_limit=32, tools=None, **options):
    from mastery.agents.resilience import parse_price_table
    from mastery.serving.agent_api import AgentAPISettings, create_app
    from mastery.serving.agent_runs import BackendSpec, RunnerSettings

    backends = [BackendSpec("primary", p_url + "/v1", PRIMARY_MODEL, timeout_s=0.3),
                BackendSpec("fallback", f_url + "/v1", FALLBACK_MODEL, timeout_s=0.3)]
    runner = RunnerSettings(backends=backends, tools=tools or demo_tools(), agent_mode="native",
                            prices=parse_price_table(EXAMPLE_PRICES),
                            workers=workers, queue_limit=queue_limit, llm_retry=RetryPolicy(attempts=3, base_s=0.01),
                            tool_retry=RetryPolicy(attempts=2, base_s=0.01), sleep=lambda s: None)
    return create_app(AgentAPISettings(db_path=db, runner=runner, default_timeout_s=20.0, keys=keys[0], **options))


@pytest.fixture(scope="module")
def server(llms, keys, tmp_path_factory):
    db = tmp_path_factory.mktemp("agent-api") / "runs.db"
    app = _app(db, llms[2], llms[3], keys)
    with ServerThread(app) as srv:
        yield srv.url, db
    app.state.close()


@pytest.fixture(scope="module")
def api(server, keys):
    """alice's client."""
    with api_client(server[0], keys[1]["alice"], timeout=30.0) as client:
        yield client, server[1]


def _run(client, body, headers=None):
    created = client.post("/runs", json=body, headers=headers or {})
    assert created.status_code == 202, created.text
    steps, result = wait_result(client, created.json()["id"])
    return steps, result


def test_normal_run_streams_the_stored_steps_and_costs(api):
    client, _ = api
    steps, result = _run(client, {"question": "What is 17 * 23?"}, {"X-Request-ID": "t-req-1"})
    stored = client.get(f"/runs/{result['id']}").json()
    assert result == stored and steps == stored["steps"]
    assert stored["status"] == "answered" and stored["answer"] == "391" and stored["backend"] == "primary"
    assert [s["kind"] for s in steps] == ["tool", "final"] and steps[0]["observation"] == "391"
    assert stored["request_id"] == "t-req-1" and stored["llm_retries"] == stored["fallbacks"] == 0
    cost = stored["cost"]
    assert cost["total_tokens"] > 0 and cost["models"][PRIMARY_MODEL]["listed"]
    assert cost["usd"] == pytest.approx((cost["prompt_tokens"] * 0.15 + cost["completion_tokens"] * 0.60) / 1e6)
    resumed, again = wait_result(client, result["id"], after=1)  # Last-Event-ID: 1
    assert resumed == steps[1:] and again == stored
    pricing = client.get("/pricing").json()
    assert pricing["backends"] == {"primary": PRIMARY_MODEL, "fallback": FALLBACK_MODEL}
    assert client.get("/health").json()["tools"] == ["calculator", "lookup"]


def test_primary_timeout_falls_back_and_503s_are_retried(api, llms):
    client, _ = api
    primary = llms[0]
    try:
        primary.set_faults([Fault("delay", delay_s=0.8)])
        _, result = _run(client, {"question": "What is 17 * 23? [timeout]"})
        assert result["status"] == "answered" and result["backend"] == "fallback"
        assert result["fallbacks"] == 2 and result["llm_retries"] == 2
        assert result["cost"]["models"][FALLBACK_MODEL]["usd"] == 0 and len(result["errors"]) == 3
        primary.set_faults([Fault("http_503", first=2)])
        _, result = _run(client, {"question": "What is 17 * 23? [flaky]"})
        assert (result["backend"], result["llm_retries"], result["fallbacks"]) == ("primary", 2, 0)
        assert all("HTTP 503" in e for e in result["errors"])
    finally:
        primary.set_faults([])


def test_failing_tool_and_deadline(api, llms):
    client, _ = api
    _, result = _run(client, {"question": "Look it up [lookup]", "tools": ["lookup"]})
    assert result["status"] == "answered" and result["tool_retries"] == 1
    assert result["steps"][0]["kind"] == "tool_error" and "down" in result["steps"][0]["observation"]
    try:
        llms[0].set_faults([Fault("delay", delay_s=0.2)])  # slow but within the 0.3 s client timeout
        _, result = _run(client, {"question": "count [slow]", "max_steps": 12, "timeout_s": 1.0})
        assert result["status"] == "timed_out" and 1 <= len(result["steps"]) < 12 and result["wall_s"] < 3
    finally:
        llms[0].set_faults([])


def test_idempotency_and_bad_requests(api, caplog):
    client, _ = api
    body = {"question": "What is 17 * 23? [idem]", "max_steps": 3}
    first = client.post("/runs", json=body, headers={"Idempotency-Key": "key-1"})
    again = client.post("/runs", json=body, headers={"Idempotency-Key": "key-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    other = client.post("/runs", json={**body, "max_steps": 4}, headers={"Idempotency-Key": "key-1"})
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]
    assert first.json()["id"] not in other.text  # the conflict names nothing of the earlier request
    wait_result(client, first.json()["id"])
    cases = [({"question": ""}, "question"), ({"question": "x", "max_steps": 0}, "max_steps"),
             ({"question": "x", "tools": ["shell"]}, "tools.0"), ({"question": "x", "timeout_s": 1e9}, "timeout_s"),
             ({"question": "x", "priority": 1}, "priority"), ({}, "question")]
    for payload, field in cases:
        r = client.post("/runs", json=payload)
        assert r.status_code == 422 and field in r.json()["error"], (payload, r.text)
    r = client.post("/runs", json=body, headers={"Idempotency-Key": "k" * 201})
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["error"]
    assert client.post("/runs", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
    assert client.get("/runs/" + "0" * 32).status_code == 404
    assert client.get("/runs/" + "0" * 32 + "/events").status_code == 404
    assert client.get("/runs/not-an-id").status_code == 404


def test_structured_logs_carry_request_and_run_ids(api, caplog):
    from mastery.serving.logs import JsonFormatter

    client, _ = api
    with caplog.at_level(logging.INFO):
        _, result = _run(client, {"question": "What is 17 * 23? [logs]"}, {"X-Request-ID": "t-logs-1"})
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records
             if r.name in ("mastery.serving.agent", "mastery.serving.access")]
    events = {ln.get("event") for ln in lines if ln.get("run_id") == result["id"]}
    assert {"run_started", "run_step", "run_finished"} <= events
    assert any(ln.get("request_id") == "t-logs-1" and ln.get("event") == "run_finished" for ln in lines)
    assert any(ln.get("request_id") == "t-logs-1" and ln.get("path") == "/runs" for ln in lines)


def test_queue_full_is_429_and_restart_keeps_runs(llms, keys, tmp_path):
    from mastery.serving.agent_runs import RunStore

    db = tmp_path / "runs.db"
    app = _app(db, llms[2], llms[3], keys, workers=1, queue_limit=0)
    token = keys[1]["alice"]
    try:
        llms[0].set_faults([Fault("delay", delay_s=0.25)])
        with ServerThread(app) as server, api_client(server.url, token, timeout=30) as client:
            busy = client.post("/runs", json={"question": "What is 17 * 23?"}).json()["id"]
            refused = client.post("/runs", json={"question": "What is 17 * 23? again"},
                                  headers={"Idempotency-Key": "refused-1"})
            assert refused.status_code == 429 and refused.headers["retry-after"]
            _, done = wait_result(client, busy)
            accepted = client.post("/runs", json={"question": "What is 17 * 23? again"},
                                   headers={"Idempotency-Key": "refused-1"})  # the refused key was not kept
            assert accepted.status_code == 202
            _, second = wait_result(client, accepted.json()["id"])
    finally:
        llms[0].set_faults([])
        app.state.close()
    store = RunStore(db)  # a run stored but never run: what a crash between POST and the worker leaves behind
    orphan, _ = store.create("never ran", {"max_steps": 2, "timeout_s": 5.0, "tools": ["calculator"]}, "", None, "h",
                             owner="alice")
    store.close()
    app = _app(db, llms[2], llms[3], keys)
    with ServerThread(app) as server, api_client(server.url, token, timeout=30) as client:
        assert client.get(f"/runs/{busy}").json() == done
        assert client.get(f"/runs/{second['id']}").json()["answer"] == "391"
        interrupted = client.get(f"/runs/{orphan}").json()
        assert interrupted["status"] == "interrupted" and "interrupted" in interrupted["reason"]
        _, replay = wait_result(client, orphan)  # its stream ends at once with the result
        assert replay["status"] == "interrupted"
    app.state.close()


def test_fuzz_finds_no_server_errors(api):
    from mastery.serving.fuzz import fuzz_api

    client, _ = api
    result = fuzz_api(str(client.base_url).rstrip("/"), max_examples=6, seed=0,
                      headers={"Authorization": client.headers["authorization"]})
    assert result.cases > 20
    assert result.server_errors == 0, [o.examples for o in result.operations if o.server_errors]
    assert not result.failures(), [o.examples for o in result.operations if o.failures]


def test_cli_registers_agent_serve():
    from mastery.cli import build_parser

    args = build_parser().parse_args(["agent", "serve", "--port", "8011", "--fallback-url", "http://127.0.0.1:9/v1",
                                      "--mode", "native", "--llm-url", "http://127.0.0.1:9/v1"])
    assert args.port == 8011 and args.fallback_url.endswith("/v1") and args.db.endswith(".db")
    assert args.mode == "native" and args.llm_url == "http://127.0.0.1:9/v1"
    assert args.allow_python is False and args.allowed_host == [] and args.keys_file is None


# -- authentication, owners, trusted hosts, tools by configuration ---------------------------------------
def test_no_key_or_a_wrong_key_is_401_and_health_stays_open(server):
    url, _ = server
    run_path = "/runs/" + "0" * 32
    with api_client(url, None, timeout=30.0) as anonymous:
        assert anonymous.get("/health").status_code == 200
        refused = [anonymous.post("/runs", json={"question": "What is 17 * 23?", "tools": ["calculator"]}),
                   anonymous.get(run_path), anonymous.get(run_path + "/events"), anonymous.get("/pricing")]
        for r in refused:
            assert r.status_code == 401, (r.request.url, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer") and r.headers["x-request-id"]
            assert "API key" in r.json()["error"]
        for header in ("Bearer mst_not-a-key", "Basic YWxpY2U6cHc=", "Bearer", "Bearer " + "x" * 5000):
            r = anonymous.get("/pricing", headers={"Authorization": header})
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), header
    assert refused[0].json()["request_id"] == refused[0].headers["x-request-id"]


def test_another_owners_run_is_404_like_a_missing_one(server, keys, api):
    alice, _ = api
    created = alice.post("/runs", json={"question": "What is 17 * 23? [alice secret]"}, headers={"X-Request-ID": "a-1"})
    run_id = created.json()["id"]
    _, result = wait_result(alice, run_id)
    assert result["owner"] == "alice" and result["answer"] == "391"
    with api_client(server[0], keys[1]["bob"], timeout=30.0) as bob:
        for path in (f"/runs/{run_id}", f"/runs/{run_id}/events"):
            theirs, missing = bob.get(path), bob.get(path.replace(run_id, "f" * 32))
            assert theirs.status_code == missing.status_code == 404, path
            # ids are random hex and may contain "391" by chance: look at the body without them
            body = theirs.text.replace(run_id, "ID").replace(theirs.headers["x-request-id"], "RID")
            assert "secret" not in body and "391" not in body
            # the same answer as for a run that does not exist, apart from the ids in it
            assert theirs.json()["error"].replace(run_id, "ID") == missing.json()["error"].replace("f" * 32, "ID")
    assert alice.get(f"/runs/{run_id}").status_code == 200  # the owner still reads it


def test_idempotency_keys_are_scoped_per_owner_and_a_conflict_reveals_nothing(server, keys, api):
    alice, _ = api
    secret = {"question": "What is 17 * 23? [alice private]", "max_steps": 3}
    first = alice.post("/runs", json=secret, headers={"Idempotency-Key": "shared-key"})
    assert first.status_code == 202
    with api_client(server[0], keys[1]["bob"], timeout=30.0) as bob:
        # the same key from another owner is another key: a new run of bob's, not alice's run, not a 409
        mine = bob.post("/runs", json={"question": "What is 6 * 7?"}, headers={"Idempotency-Key": "shared-key"})
        assert mine.status_code == 202 and mine.json()["created"] is True and mine.json()["id"] != first.json()["id"]
        # even alice's exact body from bob starts bob's own run
        copy = bob.post("/runs", json=secret, headers={"Idempotency-Key": "copied-key"})
        assert copy.status_code == 202 and copy.json()["id"] != first.json()["id"]
        conflict = bob.post("/runs", json=secret, headers={"Idempotency-Key": "shared-key"})
        assert conflict.status_code == 409
        for leak in (first.json()["id"], mine.json()["id"], "private", "6 * 7"):
            assert leak not in conflict.text, leak
        wait_result(bob, mine.json()["id"])
        wait_result(bob, copy.json()["id"])
    again = alice.post("/runs", json={**secret, "max_steps": 4}, headers={"Idempotency-Key": "shared-key"})
    assert again.status_code == 409 and first.json()["id"] not in again.text
    wait_result(alice, first.json()["id"])


def test_a_host_header_not_allowed_is_400(server, keys):
    url, _ = server
    port = url.rsplit(":", 1)[1]
    with api_client(url, keys[1]["alice"], timeout=30.0) as client:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "", "localhost.:80"):
            r = client.get("/pricing", headers={"Host": host})
            assert r.status_code == 400, host
            assert r.headers["x-request-id"] and "Host" in r.json()["error"]
        r = client.get("/health", headers={"Host": "attacker.test"})  # even /health: a rebinding page learns nothing
        assert r.status_code == 400
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert client.get("/pricing", headers={"Host": host}).status_code == 200, host


def test_a_revoked_key_is_refused_on_the_next_request(server, keys):
    store, _ = keys
    key, token = store.create("carol")
    with api_client(server[0], token, timeout=30.0) as carol:
        assert carol.get("/pricing").status_code == 200
        store.revoke(key.id)
        r = carol.get("/pricing")
        assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_the_python_tool_is_the_servers_choice_never_the_requests(api, llms, keys, tmp_path):
    from mastery.agents.tools import python_tool
    from mastery.serving.agent_api import default_settings

    client, _ = api
    r = client.post("/runs", json={"question": "print(open('/etc/shadow').read())", "tools": ["python"]})
    assert r.status_code == 422 and "tools.0" in r.json()["error"]
    # a server whose tool list holds python refuses to start unless it was configured to offer it
    with pytest.raises(ConfigError, match="allow_python"):
        _app(tmp_path / "a.db", llms[2], llms[3], keys, tools=[*demo_tools(), python_tool()])
    # `mastery agent serve`'s settings: python only with --allow-python
    closed = default_settings(tmp_path / "b.db", "http://127.0.0.1:9/v1", "m", keys=keys[0])
    opened = default_settings(tmp_path / "c.db", "http://127.0.0.1:9/v1", "m", keys=keys[0], allow_python=True)
    assert [t.name for t in closed.runner.tools] == ["calculator", "kb_search"]
    assert "python" in [t.name for t in opened.runner.tools] and opened.allow_python
    app = _app(tmp_path / "d.db", llms[2], llms[3], keys, tools=[*demo_tools(), python_tool()], allow_python=True)
    try:
        schema = app.openapi()["components"]["schemas"]
        assert "python" in schema["ToolName"]["enum"]
    finally:
        app.state.close()


def test_cli_agent_serve_refuses_to_start_without_a_key(tmp_path, capsys):
    from mastery.cli import main

    keys_file = tmp_path / "empty.json"
    code = main(["agent", "serve", "--keys-file", str(keys_file), "--llm-url", "http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("mastery: error: no API key in")
    assert "mastery keys create --owner NAME --keys-file" in err[-1]


def test_run_store_from_before_owners_hides_its_runs(tmp_path):
    """A runs file written before owners existed: its runs belong to nobody, its unscoped keys are dropped."""
    import sqlite3

    from mastery.serving.agent_runs import RunStore

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, question TEXT NOT NULL, params TEXT NOT NULL,
            answer TEXT, reason TEXT NOT NULL DEFAULT '', backend TEXT NOT NULL DEFAULT '',
            llm_retries INTEGER NOT NULL DEFAULT 0, tool_retries INTEGER NOT NULL DEFAULT 0,
            fallbacks INTEGER NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]', cost TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL, started_at REAL, finished_at REAL, request_id TEXT NOT NULL DEFAULT '',
            idempotency_key TEXT);
        CREATE TABLE idempotency (key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, run_id TEXT NOT NULL,
            created_at REAL NOT NULL);
        INSERT INTO runs (id, status, question, params, created_at, idempotency_key)
            VALUES ('old1', 'answered', 'q', '{"max_steps": 2, "timeout_s": 5.0, "tools": []}', 0, 'k');
        INSERT INTO idempotency VALUES ('k', 'h', 'old1', 0);""")
    con.commit()
    con.close()
    store = RunStore(db)
    try:
        assert store.get("old1") is not None and store.get("old1", owner="alice") is None
        assert store.get("old1")["owner"] == ""
        run_id, created = store.create("q", {"max_steps": 2, "timeout_s": 5.0, "tools": []}, "", "k", "h2",
                                       owner="alice")
        assert created and run_id != "old1"
    finally:
        store.close()
