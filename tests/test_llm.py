"""The LLM runtime: settings, the client's errors (dead port, timeout, bad answers), the real embedded server."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mastery.core.errors import ConfigError, MasteryError
from mastery.llm.client import LLMClient, open_client
from mastery.llm.errors import LLMBadResponse, LLMModelNotFound, LLMServerDown, LLMServerError, LLMTimeout
from mastery.llm.settings import EMBEDDED_MODEL, LLMSettings, load_settings
from tests import llm_server as shared
from tests.llm_server import needs_llm

llm_server = shared.llm_server  # the session's one real embedded server (a fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(url: str, timeout: float = 5.0, **kwargs) -> LLMClient:
    return LLMClient(LLMSettings(backend="openai", base_url=url, model="m", timeout_s=timeout), **kwargs)


# -- settings ------------------------------------------------------------------------------
def test_settings_from_env_and_overrides():
    env = {"MASTERY_LLM_BACKEND": "Ollama", "MASTERY_LLM_TIMEOUT": "7.5", "MASTERY_THREADS": "1",
           "MASTERY_LLM_CTX": "2048"}
    s = load_settings(env)
    assert (s.backend, s.timeout_s, s.threads, s.ctx) == ("ollama", 7.5, 1, 2048)
    assert s.url == "http://127.0.0.1:11434/v1" and s.model_name == "llama3"
    s = load_settings(env, backend="embedded", threads=None, model=None)  # None overrides are ignored
    assert s.threads == 1 and s.model_name == EMBEDDED_MODEL and s.url.endswith("/v1")
    assert load_settings({"MASTERY_LLM_THREADS": "2", "MASTERY_THREADS": "1"}).threads == 2


@pytest.mark.parametrize("env, match", [
    ({"MASTERY_LLM_BACKEND": "gpt"}, "backend must be one of"),
    ({"MASTERY_LLM_BACKEND": "openai"}, "needs a URL"),
    ({"MASTERY_LLM_BACKEND": "openai", "MASTERY_LLM_BASE_URL": "http://x/v1"}, "needs a model"),
    ({"MASTERY_LLM_BASE_URL": "localhost:8080"}, "must start with http"),
    ({"MASTERY_LLM_TIMEOUT": "soon"}, "must be a float"),
    ({"MASTERY_LLM_TIMEOUT": "0"}, "timeout must be > 0"),
    ({"MASTERY_LLM_THREADS": "0"}, "threads must be >= 1"),
])
def test_bad_settings_give_clear_errors(env, match):
    with pytest.raises(ConfigError, match=match):
        load_settings(env)


# -- errors without a real LLM ----------------------------------------------------------------
def test_dead_port_fails_fast_with_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    client = _client(url)
    start = time.perf_counter()
    with pytest.raises(LLMServerDown, match=f"no LLM server answers at {url}") as info:
        client.chat("hi", max_tokens=4)
    assert time.perf_counter() - start < 2.0  # no retries with back-off
    assert isinstance(info.value, MasteryError)
    with pytest.raises(LLMServerDown):
        list(_client(url, verify_model=False).stream("hi"))
    # the embedded backend's hint names the command that starts a server
    embedded = LLMClient(LLMSettings(base_url=url))
    with pytest.raises(LLMServerDown, match="mastery llm serve"):
        embedded.chat("hi")


def test_silent_server_times_out():
    # A listening socket that never accepts: the kernel completes the TCP handshake (backlog), then
    # nothing is ever sent back. The client must give up after its timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        client = _client(url, timeout=0.3, verify_model=False)
        start = time.perf_counter()
        with pytest.raises(LLMTimeout, match=r"within 0\.3s"):
            client.chat("hi")
        with pytest.raises(LLMTimeout):
            list(client.stream("hi"))
        assert time.perf_counter() - start < 3.0
        assert [c["error"] for c in client.calls] == ["LLMTimeout", "LLMTimeout"]
        assert all(not c["ok"] and c["latency_s"] >= 0.3 for c in client.calls)


class _Canned(BaseHTTPRequestHandler):
    """Answers every request with the class's (status, body)."""

    reply: tuple[int, object] = (200, {})

    def _send(self) -> None:
        status, body = self.reply
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _send

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned():
    """Start a local HTTP server; ``canned(status, body)`` returns its /v1 URL."""
    servers = []

    def start(status: int, body: object) -> str:
        handler = type("Handler", (_Canned,), {"reply": (status, body)})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_error_statuses_map_to_clear_errors(canned):
    ollama_missing = canned(404, {"error": {"message": 'model "llama9" not found, try pulling it first'}})
    with pytest.raises(LLMModelNotFound, match="llama9"):
        _client(ollama_missing, verify_model=False).chat("hi")
    with pytest.raises(LLMBadResponse, match="HTTP 500: out of memory"):
        _client(canned(500, {"error": {"message": "out of memory"}}), verify_model=False).chat("hi")
    with pytest.raises(LLMBadResponse, match="no such endpoint"):
        _client(canned(404, "<html>nope</html>"), verify_model=False).chat("hi")
    with pytest.raises(LLMBadResponse, match="without choices"):
        _client(canned(200, {"id": "x", "choices": [], "model": "m", "object": "chat.completion",
                             "created": 0}), verify_model=False).chat("hi")
    with pytest.raises(LLMBadResponse, match="API key"):
        _client(canned(401, {"error": {"message": "bad key"}}), verify_model=False).chat("hi")


def test_model_list_decides_missing_models(canned):
    url = canned(200, {"object": "list", "data": [{"id": "llama3:latest", "object": "model", "created": 0,
                                                   "owned_by": "me"}]})
    with pytest.raises(LLMModelNotFound, match=r"'m' is not served.*available: llama3:latest"):
        _client(url).chat("hi")
    client = LLMClient(LLMSettings(backend="ollama", base_url=url, model="llama3"))
    client.check_model()  # "llama3" matches Ollama's "llama3:latest"


def test_embedded_server_start_failure_is_clear(tmp_path):
    from mastery.llm.server import EmbeddedServer

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    start = time.perf_counter()
    with pytest.raises(LLMServerError, match=r"exited with code .*invalid magic characters"):
        EmbeddedServer(bad, startup_timeout_s=30, log_path=tmp_path / "server.log").start()
    assert time.perf_counter() - start < 30
    with pytest.raises(LLMServerError, match="not found"):
        EmbeddedServer(tmp_path / "missing.gguf").start()


# -- the one fake, in process and over HTTP --------------------------------------------------------
def test_scripted_chat_plays_by_turn_stops_cuts_and_counts():
    from mastery.llm.fake import ScriptedChat, estimate_tokens, tool_call

    llm = ScriptedChat(["first", "second Observation: x", tool_call("calculator", expression="6 * 7")])
    turn0 = [{"role": "user", "content": "hi"}]
    turn1 = [*turn0, {"role": "assistant", "content": "first"}]
    one = llm.chat(turn0, system="be brief")
    assert (one.text, one.finish_reason, one.tool_calls) == ("first", "stop", ())
    assert one.prompt_tokens == estimate_tokens("be brief\nhi") == 3 and one.completion_tokens == 2
    assert llm.chat(turn1, stop=["Observation:"]).text == "second "  # cut where a server would stop
    call = llm.chat([*turn1, {"role": "user", "content": "go"}, {"role": "assistant", "content": "ok"}])
    assert call.finish_reason == "tool_calls" and call.text == ""
    assert call.tool_calls[0]["name"] == "calculator" and json.loads(call.tool_calls[0]["arguments"]) == {
        "expression": "6 * 7"}
    assert [c["system"] for c in llm.calls] == ["be brief", None, None] and llm.calls[1]["stop"] == ["Observation:"]

    long = ScriptedChat(["x" * 100]).chat("hi", max_tokens=5)
    assert long.text == "x" * 20 and long.finish_reason == "length" and long.completion_tokens == 5
    stream = llm.stream("hi")
    pieces = list(stream)
    assert pieces == ["first"] and stream.read().stream and stream.completion.text == "first"
    assert "".join(ScriptedChat(["a b  c\n"]).stream("hi")) == "a b  c\n"
    failing = ScriptedChat([LLMTimeout("slow")])
    with pytest.raises(LLMTimeout):
        failing.chat("hi")
    assert failing.calls[0]["error"] == "LLMTimeout: slow"
    with pytest.raises(ConfigError):
        ScriptedChat([])


def test_responders_in_order_and_per_question():
    from mastery.llm.fake import QuestionScript, ScriptedChat, in_order

    ordered = ScriptedChat(in_order("a", "b"))
    assert [ordered.chat("same").text for _ in range(3)] == ["a", "b", "b"]  # call order, the last repeats
    plans = {"alpha": ["a0", "a1"], "beta": ["b0", "b1"]}
    by_call = ScriptedChat(QuestionScript(plans, by="call"))
    answers = [by_call.chat(q).text for q in ("alpha?", "beta?", "alpha?", "gamma?")]
    assert answers == ["a0", "b0", "a1", "I don't know."]
    by_turn = ScriptedChat(QuestionScript(plans))
    turn1 = [{"role": "user", "content": "beta?"}, {"role": "assistant", "content": "b0"}]
    assert [by_turn.chat(m).text for m in ("beta?", turn1, "beta?")] == ["b0", "b1", "b0"]


def test_the_scripted_server_serves_the_same_fake():
    from mastery.llm.fake import QuestionScript, ScriptedChat, tool_call
    from mastery.llm.scripted import ScriptedLLM, create_scripted_app
    from mastery.serving.server import ServerThread

    def script():
        return QuestionScript({"6 * 7": [tool_call("calculator", expression="6 * 7"), "It is 42. Observation: no"]},
                              default=["I only know 6 * 7."])

    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]
    asks = [[{"role": "user", "content": "What is 6 * 7?"}],
            [{"role": "user", "content": "What is 6 * 7?"},
             {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
                 "name": "calculator", "arguments": '{"expression": "6 * 7"}'}}]},
             {"role": "tool", "tool_call_id": "c1", "content": "42"}],
            [{"role": "user", "content": "And 2 + 2?"}]]
    local = ScriptedChat(script(), model="m")
    scripted = ScriptedLLM(script(), model="m")
    with ServerThread(create_scripted_app(scripted)) as server:
        client = _client(server.url + "/v1")  # checks that /v1/models lists "m"
        for messages in asks:
            kwargs = {"system": "You are a calculator.", "tools": tools, "stop": ["Observation:"], "max_tokens": 64}
            remote, here = client.chat(messages, **kwargs), local.chat(messages, **kwargs)
            assert (remote.text, remote.finish_reason, remote.prompt_tokens, remote.completion_tokens) == (
                here.text, here.finish_reason, here.prompt_tokens, here.completion_tokens)
            assert [(c["name"], c["arguments"]) for c in remote.tool_calls] == [
                (c["name"], c["arguments"]) for c in here.tool_calls]
    assert [c["reply"] for c in scripted.fake.calls] == ["", "It is 42. ", "I only know 6 * 7."]
    assert scripted.fake.calls[0]["system"] == "You are a calculator." and scripted.outcomes == {"ok": 3}


# -- the real embedded LLM ----------------------------------------------------------------------
@needs_llm
def test_chat_records_usage_and_latency(llm_server):
    client = LLMClient(load_settings({}, base_url=llm_server.url))
    reply = client.chat("Reply with the single word: hello", max_tokens=8)
    assert reply.text.strip() and reply.model == EMBEDDED_MODEL
    assert reply.prompt_tokens > 5 and 0 < reply.completion_tokens <= 8 and reply.usage_reported
    assert reply.latency_s > 0 and reply.generation_tokens_per_s > 0
    assert reply.server_timings and reply.server_timings["predicted_n"] == reply.completion_tokens
    again = client.chat("Reply with the single word: hello", max_tokens=8)
    assert again.text == reply.text  # temperature 0 and a fixed seed: reproducible
    assert len(client.calls) == 2 and all(c["ok"] for c in client.calls)
    assert {"prompt_tokens", "completion_tokens", "latency_s", "time_to_first_token_s", "model"} <= set(
        client.calls[0])


@needs_llm
def test_streaming_chat(llm_server, tmp_path):
    log_file = tmp_path / "calls.jsonl"
    client = LLMClient(load_settings({}, base_url=llm_server.url, call_log=str(log_file)))
    stream = client.stream("Count from 1 to 5, separated by commas.", max_tokens=24)
    pieces = list(stream)
    completion = stream.read()
    assert len(pieces) > 3 and "".join(pieces) == completion.text == stream.text
    assert "1" in completion.text and "3" in completion.text
    assert completion.stream and completion.usage_reported and completion.completion_tokens >= len(pieces) - 1
    assert 0 < completion.time_to_first_token_s < completion.latency_s
    assert completion.prompt_tokens_per_s > 0 and completion.generation_tokens_per_s > 0
    record = json.loads(log_file.read_text().splitlines()[-1])
    assert record["ok"] and record["stream"] and record["completion_tokens"] == completion.completion_tokens


@needs_llm
def test_wrong_model_name_is_a_clear_error(llm_server):
    # llama.cpp itself answers any model name with the model it loaded; the client checks the list
    client = LLMClient(load_settings({}, base_url=llm_server.url, model="llama3-70b"))
    with pytest.raises(LLMModelNotFound, match=f"'llama3-70b' is not served.*available: {EMBEDDED_MODEL}"):
        client.chat("hi", max_tokens=4)


@needs_llm
def test_tiny_timeout_on_a_long_generation(llm_server):
    client = LLMClient(load_settings({}, base_url=llm_server.url, timeout_s=0.2))
    client.check_model()
    start = time.perf_counter()
    with pytest.raises(LLMTimeout):
        client.chat("Write a long story about a dragon.", max_tokens=64)
    assert time.perf_counter() - start < 2.0


@needs_llm
def test_cli_chat_streams_and_dead_url_exits_2(llm_server, capsys):
    from mastery.cli import main

    assert main(["llm", "chat", "Say OK", "--llm-url", llm_server.url, "--max-tokens", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and "completion tokens" in captured.err
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    assert main(["llm", "chat", "hi", "--llm-url", dead]) == 2
    assert f"no LLM server answers at {dead}" in capsys.readouterr().err


@needs_llm
def test_open_client_autostarts_and_stops_an_embedded_server(monkeypatch):
    monkeypatch.setattr("mastery.llm.client.server_healthy", lambda url, timeout_s=1.0: False)
    with open_client(load_settings({}, threads=1, ctx=1024)) as llm:
        server = llm.server
        pid = server.pid
        assert server.running() and llm.device.startswith("llama.cpp on ")
        assert llm.chat("Say hi", max_tokens=2).completion_tokens > 0
    assert not server.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child is gone, not a zombie: stop() waited for it
    with pytest.raises(LLMServerDown):
        LLMClient(load_settings({}, base_url=llm.base_url)).chat("hi")


def test_serve_answers_to_the_name_of_the_model_it_serves(monkeypatch, capsys):
    """`mastery llm serve --model X` must list X in /v1/models, or clients asking for X are told it is missing."""
    import mastery.llm.server as server_module
    from mastery.cli import main

    seen: dict = {}

    class FakeServer:
        device, url, pid, log_path = "cpu", "http://127.0.0.1:1/v1", 1, "log"

        def __init__(self, model, **kwargs):
            seen.update(kwargs, model=model)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def wait(self):
            return 0

    import signal

    monkeypatch.setattr(server_module, "EmbeddedServer", FakeServer)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # serve installs process-wide handlers
    assert main(["llm", "serve", "--model", "qwen2.5-coder-1.5b-instruct-q4_k_m", "--port", "0"]) == 0
    assert seen["model"] == seen["alias"] == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert "MASTERY_LLM_MODEL=qwen2.5-coder-1.5b-instruct-q4_k_m" in capsys.readouterr().out
