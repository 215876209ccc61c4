"""The Research Assistant API around a scripted Brain: the SSE stream, the stored history, owners, uploads
into a real (temporary) knowledge base, size limits, typed 4xx, guards and failures."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from mastery.apps.assistant.api import AssistantAPISettings, create_app
from mastery.apps.assistant.events import Citation, LLMCall, Passage, event
from mastery.apps.assistant.guards import GuardRefusal, Guards
from mastery.apps.assistant.sessions import INTERRUPTED, SessionStore
from mastery.retrieval.documents import write_text_pdf
from mastery.retrieval.kb import KnowledgeBase
from mastery.serving.agent_client import api_client
from mastery.serving.auth import KeyStore
from mastery.serving.server import ServerThread
from tests.test_kb import HashEmbedder

COLLECTION = "assistant-test"
NOTES = ("# Kiwis\n\nKiwi fruit grow on vines in New Zealand orchards.\n\n"
         "## Storage\n\nKiwis ripen beside apples within a few days.\n")


class ScriptedBrain:
    """A brain that plays the contract's full event sequence from what its knowledge base retrieves:
    route, steps, passages, a thought, the answer token by token, the checked answer, usage."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.questions = []
        self.gate: threading.Event | None = None  # when set, answer() waits for it (to hold a worker busy)
        self.entered = threading.Event()
        self.fail = False

    def answer(self, question):
        self.questions.append(question)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        route = question.route_hint or "kb"
        yield event("route", route=route, reason=f"scripted: {route}", decided_by="rule", web_available=False)
        yield event("step", name="retrieve", status="start", detail="")
        hits = self.kb.query(question.text, COLLECTION, k=2) if COLLECTION in self.kb.collections() else []
        passages = [Passage(n=i + 1, text=h.text, source=h.metadata["source"], page=h.metadata["page"],
                            score=round(h.score, 4)) for i, h in enumerate(hits)]
        yield event("step", name="retrieve", status="end", detail=f"{len(passages)} passages")
        yield event("passages", passages=passages)
        if self.fail:
            raise RuntimeError("scripted failure after the passages")
        yield event("thought", text="The first passage names the place.")
        if not passages:
            yield event("answer", text="I don't know.", citations=[], unsupported=[], refused=True, revised=False)
        else:
            sentence = f"It comes from {passages[0].source} [1]."
            for piece in ("It comes from ", passages[0].source, " [1]."):
                yield event("token", text=piece)
            yield event("answer", text=sentence, citations=[Citation(1, sentence, True, 0.9)], unsupported=[],
                        refused=False, revised=False)
        yield event("usage", calls=[LLMCall("draft", "scripted", 120, 12, 0.5, 0.1)])


@pytest.fixture
def keys(tmp_path):
    store = KeyStore(tmp_path / "api-keys.json")
    return store, {owner: store.create(owner)[1] for owner in ("alice", "bob")}


@pytest.fixture
def kb(tmp_path):
    return KnowledgeBase.open(tmp_path / "kb", HashEmbedder())


def _start(tmp_path, kb, keys, brain=None, **options):
    brain = brain or ScriptedBrain(kb)
    settings = AssistantAPISettings(brain=brain, kb=kb, collection=COLLECTION, db_path=tmp_path / "sessions.db",
                                    uploads_dir=tmp_path / "uploads", keys=keys[0], **options)
    app = create_app(settings)
    return brain, app, ServerThread(app).start()


@pytest.fixture
def service(tmp_path, kb, keys):
    """(brain, base URL, {owner: token}) of a running API with a scripted brain."""
    brain, app, server = _start(tmp_path, kb, keys, max_upload_bytes=20_000)
    yield brain, server.url, keys[1]
    server.stop()
    app.state.close()


def _client(url, token):
    return api_client(url, token, timeout=30.0)


def _sse(client, path, body):
    """The stream's messages as (event, id, data)."""
    out = []
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ident = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                ident = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                out.append((name, ident, json.loads(line.split(":", 1)[1])))
    return out


def _upload_notes(client, name="kiwis.md", text=NOTES):
    return client.post("/documents", files={"file": (name, text.encode(), "text/markdown")})


def test_upload_then_ask_streams_every_event_in_order_and_keeps_the_history(service):
    brain, url, tokens = service
    with _client(url, tokens["alice"]) as alice:
        up = _upload_notes(alice)
        assert up.status_code == 201, up.text
        assert up.json()["source"] == "kiwis.md" and up.json()["status"] == "added" and up.json()["chunks_added"] >= 1
        docs = alice.get("/documents").json()
        assert [d["source"] for d in docs["documents"]] == ["kiwis.md"] and docs["collection"] == COLLECTION
        sid = alice.post("/sessions", json={}).json()["id"]
        messages = _sse(alice, f"/sessions/{sid}/ask", {"question": "Where do kiwi fruit grow?"})

    kinds = [m[0] for m in messages]
    assert kinds == ["turn", "route", "step", "step", "passages", "thought", "token", "token", "token", "answer",
                     "usage", "done"]
    assert [m[1] for m in messages] == [str(i) for i in range(len(messages))]  # ids number the stream
    data = {m[0]: m[2] for m in messages}
    assert data["turn"]["session_id"] == sid and len(data["turn"]["turn_id"]) == 32
    assert data["route"] == {"route": "kb", "reason": "scripted: kb", "decided_by": "rule", "web_available": False}
    assert data["passages"]["passages"][0]["source"] == "kiwis.md"
    assert "Zealand" in " ".join(p["text"] for p in data["passages"]["passages"])
    assert "".join(m[2]["text"] for m in messages if m[0] == "token") == data["answer"]["text"]
    assert data["answer"]["citations"][0]["n"] == 1 and data["done"] == {"turn_id": data["turn"]["turn_id"],
                                                                         "status": "done"}
    assert brain.questions[0].owner == "alice" and brain.questions[0].session_id == sid
    assert brain.questions[0].route_hint is None

    with _client(url, tokens["alice"]) as alice:
        detail = alice.get(f"/sessions/{sid}").json()
    assert detail["title"] == "Where do kiwi fruit grow?" and detail["turns"] == 1
    turn = detail["history"][0]
    assert turn["status"] == "done" and turn["answer"] == data["answer"]["text"]
    assert turn["route"]["route"] == "kb" and turn["passages"] == data["passages"]["passages"]
    assert [s["status"] for s in turn["steps"]] == ["start", "end"] and turn["thought"].startswith("The first")
    assert turn["usage"][0]["prompt_tokens"] == 120 and turn["request_id"] == data["turn"]["request_id"]


def test_non_streaming_answer_passes_the_route_and_returns_the_stored_turn(service):
    brain, url, tokens = service
    with _client(url, tokens["alice"]) as alice:
        sid = alice.post("/sessions", json={"title": "direct"}).json()["id"]
        r = alice.post(f"/sessions/{sid}/answer", json={"question": "Say hello", "route": "direct"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "done" and body["refused"] is True and body["answer"] == "I don't know."
        assert body["route"]["route"] == "direct" and brain.questions[-1].route_hint == "direct"
        assert r.headers["x-request-id"] == body["request_id"]
        listed = alice.get("/sessions").json()["sessions"]
        assert [(s["id"], s["title"], s["turns"]) for s in listed] == [(sid, "direct", 1)]


def test_every_route_but_health_needs_a_key_and_another_owners_session_is_404(service):
    _, url, tokens = service
    with _client(url, tokens["alice"]) as alice:
        sid = alice.post("/sessions", json={}).json()["id"]
        alice.post(f"/sessions/{sid}/answer", json={"question": "Where do kiwis grow?"}).raise_for_status()
    with _client(url, None) as anonymous:
        assert anonymous.get("/health").status_code == 200
        refused = [anonymous.get("/sessions"), anonymous.post("/sessions", json={}), anonymous.get(f"/sessions/{sid}"),
                   anonymous.post(f"/sessions/{sid}/ask", json={"question": "x"}),
                   anonymous.post(f"/sessions/{sid}/answer", json={"question": "x"}), anonymous.get("/documents"),
                   anonymous.get("/documents/kiwis.md/pages/0"), anonymous.get("/documents/kiwis.md/file"),
                   anonymous.post("/documents?filename=a.txt", content=b"text")]
        for r in refused:
            assert r.status_code == 401, (r.request.url, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer") and r.headers["x-request-id"]
    missing = "0" * 32
    with _client(url, tokens["bob"]) as bob:
        assert bob.get("/sessions").json()["sessions"] == []
        for path in (f"/sessions/{sid}", f"/sessions/{missing}"):
            r = bob.get(path)
            assert r.status_code == 404 and r.json()["error"] == f"no session {path.rsplit('/', 1)[1]}"
        for verb in ("ask", "answer"):
            r = bob.post(f"/sessions/{sid}/{verb}", json={"question": "What did alice ask?"})
            assert r.status_code == 404 and "kiwi" not in r.text.lower()


def test_bad_requests_name_the_field(service):
    _, url, tokens = service
    with _client(url, tokens["alice"]) as alice:
        sid = alice.post("/sessions", json={}).json()["id"]
        cases = {"question": {"question": "  "}, "route": {"question": "hi", "route": "moon"},
                 "colour": {"question": "hi", "colour": "red"}}
        for field, body in cases.items():
            r = alice.post(f"/sessions/{sid}/ask", json=body)
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["field"] == field and field in r.json()["error"]
        r = alice.post("/sessions/not-a-session/ask", json={"question": "hi"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "session_id"
        r = alice.post(f"/sessions/{sid}/ask", json={"question": "x" * 2001})
        assert r.status_code == 422 and "question" in r.json()["error"]
        r = alice.post(f"/sessions/{sid}/ask", content=b"question=hi", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = alice.post(f"/sessions/{sid}/ask", content=b'{"question": "a", "question": "b"}',
                       headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "question"


def test_uploads_raw_bodies_pages_and_files_and_bad_uploads_are_one_line(service, tmp_path):
    _, url, tokens = service
    pdf = write_text_pdf(tmp_path / "guide.pdf", ["Alpha page about apples. " * 6, "Gamma page about ransomware "
                                                                                    "containment. " * 6])
    with _client(url, tokens["alice"]) as alice:
        r = alice.post("/documents?filename=guide.pdf", content=pdf.read_bytes(),
                       headers={"content-type": "application/pdf"})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "added" and r.json()["bytes"] == pdf.stat().st_size
        again = alice.post("/documents?filename=guide.pdf", content=pdf.read_bytes(),
                           headers={"content-type": "application/pdf"})
        assert again.json()["status"] == "unchanged" and again.json()["chunks_added"] == 0
        page = alice.get("/documents/guide.pdf/pages/2").json()
        assert page["text"].startswith("Gamma page about ransomware") and page["chunks"] >= 1
        assert "apples" not in page["text"]
        assert alice.get("/documents/guide.pdf/pages/7").status_code == 404
        file = alice.get("/documents/guide.pdf/file")
        assert file.status_code == 200 and file.content == pdf.read_bytes()
        assert alice.get("/documents/other.pdf/file").status_code == 404

        bad = {415: alice.post("/documents?filename=tool.exe", content=b"MZ"),
               400: alice.post("/documents?filename=../etc/passwd.txt", content=b"x"),
               422: alice.post("/documents", files={"file": ("empty.txt", b"", "text/plain")})}
        for status, r in bad.items():
            assert r.status_code == status, r.text
            assert "\n" not in r.json()["error"] and r.json()["request_id"] == r.headers["x-request-id"]
        assert "unsupported file type '.exe'" in bad[415].json()["error"]
        assert alice.post("/documents", content=b"text").status_code == 400  # no file name at all

        # a broken file under a stored name is refused and the stored one stays
        broken = alice.post("/documents?filename=guide.pdf", content=b"%PDF-1.4 not really",
                            headers={"content-type": "application/pdf"})
        assert broken.status_code == 422 and "guide.pdf" in broken.json()["error"]
        assert str(tmp_path) not in broken.json()["error"]  # no server path in the answer
        assert alice.get("/documents/guide.pdf/file").content == pdf.read_bytes()
        assert alice.get("/documents/guide.pdf/pages/2").status_code == 200
    leftovers = list((tmp_path / "uploads" / ".incoming").iterdir())
    assert leftovers == []


def test_an_upload_over_the_limit_is_413_naming_the_limit(service):
    _, url, tokens = service
    with _client(url, tokens["alice"]) as alice:
        raw = alice.post("/documents?filename=big.txt", content=b"a " * 15_000)  # 30 kB over a 20 kB limit
        multipart = alice.post("/documents", files={"file": ("big.txt", b"a " * 15_000, "text/plain")})
        huge = alice.post("/documents?filename=big.txt", content=b"a" * 200_000)  # refused before it is read
        for r in (raw, multipart):
            assert r.status_code == 413, r.text
            assert "upload limit of 0.02 MB (MASTERY_KB_MAX_FILE_MB)" in r.json()["error"]
        assert huge.status_code == 413 and "limit of" in huge.json()["error"]
        assert alice.get("/documents").json()["documents"] == []


def test_guards_screen_the_question_and_the_answer(tmp_path, kb, keys):
    def no_secrets(text):
        if "password" in text.lower():
            raise GuardRefusal("asks for a password")
        return text

    def redact(text):
        if "kiwis.md" in text:
            raise GuardRefusal("names a file")
        return text

    brain, app, server = _start(tmp_path, kb, keys, guards=Guards(input=no_secrets, output=redact))
    try:
        with _client(server.url, keys[1]["alice"]) as alice:
            assert alice.get("/health").json()["guards"] == ["input", "output"]
            _upload_notes(alice).raise_for_status()
            sid = alice.post("/sessions", json={}).json()["id"]
            r = alice.post(f"/sessions/{sid}/answer", json={"question": "What is the admin password?"})
            assert r.status_code == 400 and "asks for a password" in r.json()["error"] and brain.questions == []
            body = alice.post(f"/sessions/{sid}/answer", json={"question": "Where do kiwis grow?"}).json()
            assert body["refused"] is True and "withheld by the output guard: names a file" in body["answer"]
            assert body["citations"] == []
    finally:
        server.stop()
        app.state.close()
    off = Guards(input=no_secrets, enabled=False)
    assert off.active == [] and off.check_input("password?") == "password?"


def test_a_failing_brain_streams_an_error_and_the_history_says_so(tmp_path, kb, keys):
    brain = ScriptedBrain(kb)
    brain.fail = True
    _, app, server = _start(tmp_path, kb, keys, brain=brain)
    try:
        with _client(server.url, keys[1]["alice"]) as alice:
            sid = alice.post("/sessions", json={}).json()["id"]
            messages = _sse(alice, f"/sessions/{sid}/ask", {"question": "Where?"})
            assert [m[0] for m in messages][-2:] == ["error", "done"] and "answer" not in [m[0] for m in messages]
            assert "RuntimeError" in messages[-2][2]["message"] and "scripted failure" not in messages[-2][2]["message"]
            assert messages[-1][2]["status"] == "error"
            turn = alice.get(f"/sessions/{sid}").json()["history"][0]
            assert turn["status"] == "error" and "RuntimeError" in turn["error"] and turn["passages"] == []
    finally:
        server.stop()
        app.state.close()


def test_busy_workers_answer_429_and_a_stopped_answer_reads_interrupted(tmp_path, kb, keys):
    brain = ScriptedBrain(kb)
    brain.gate = threading.Event()
    _, app, server = _start(tmp_path, kb, keys, brain=brain, max_running=1)
    try:
        with _client(server.url, keys[1]["alice"]) as alice:
            sid = alice.post("/sessions", json={}).json()["id"]
            first: dict = {}
            worker = threading.Thread(target=lambda: first.update(
                r=alice.post(f"/sessions/{sid}/answer", json={"question": "slow"})))
            worker.start()
            assert brain.entered.wait(30)
            busy = alice.post(f"/sessions/{sid}/answer", json={"question": "second"})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "5"
            assert alice.get("/health").json()["running"] == 1
            brain.gate.set()
            worker.join(30)
            assert first["r"].status_code == 200
    finally:
        brain.gate.set()
        server.stop()
        app.state.close()

    store = SessionStore(tmp_path / "restart.db")
    sid = store.create_session("alice")
    store.start_turn(sid, "alice", "cut short")
    store.close()
    reopened = SessionStore(tmp_path / "restart.db")
    turn = reopened.session("alice", sid)["history"][0]
    assert reopened.interrupted_on_open == 1 and turn["status"] == "interrupted" and turn["error"] == INTERRUPTED
    assert reopened.session("bob", sid) is None
    reopened.close()


def test_health_reports_the_llm_and_the_knowledge_base(tmp_path, kb, keys):
    _, app, server = _start(tmp_path, kb, keys, llm_url="http://127.0.0.1:9/v1", llm_probe=lambda url: False)
    try:
        with _client(server.url, None) as anonymous:
            health = anonymous.get("/health").json()
            assert health["status"] == "degraded" and health["llm"] == {"url": "http://127.0.0.1:9/v1",
                                                                        "reachable": False}
            assert health["kb"]["chunks"] == 0 and "no documents yet" in health["kb"]["error"]
            assert health["guards"] == [] and health["running"] == 0
        with _client(server.url, keys[1]["bob"]) as bob:
            _upload_notes(bob).raise_for_status()
        with _client(server.url, None) as anonymous:
            kb_health = anonymous.get("/health").json()["kb"]
        assert kb_health["sources"] == 1 and kb_health["chunks"] >= 1 and kb_health["error"] is None
        bad_host = httpx.get(server.url + "/health", headers={"Host": "evil.example"}, trust_env=False)
        assert bad_host.status_code == 400
    finally:
        server.stop()
        app.state.close()


def test_fuzzing_the_schema_finds_no_server_errors(service):
    from mastery.serving.fuzz import fuzz_api

    _, url, tokens = service
    result = fuzz_api(url, max_examples=6, seed=0, headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert result.cases > 40
    assert result.server_errors == 0, [o.examples for o in result.operations if o.server_errors]
    # a schema-valid upload can still be a file type the knowledge base cannot read (415) or a bad name (400)
    failures = {(o.operation, check) for o in result.operations for check in o.failures}
    assert failures <= {("POST /documents", "RejectedPositiveData")}, failures


def test_wrapped_chat_screens_every_prompt_and_completion():
    from mastery.llm.fake import ScriptedChat

    seen = []
    fake = ScriptedChat(lambda messages, system: seen.append(messages[-1]["content"]) or "token sk-123 here")
    guards = Guards(input=lambda t: t.replace("hunter2", "[password]"), output=lambda t: t.replace("sk-123", "[key]"))
    chat = guards.wrap_chat(fake)
    assert chat.chat([{"role": "user", "content": "my password is hunter2"}], system="be brief").text == \
        "token [key] here"
    assert seen == ["my password is [password]"] and chat.model == fake.model  # the rest is the wrapped model's
    streamed = chat.stream("hunter2 again")
    assert "".join(streamed) == "token sk-123 here" and seen[-1] == "[password] again"  # the API screens the answer
    assert Guards().wrap_chat(fake) is fake and Guards(input=str.upper, enabled=False).wrap_chat(fake) is fake
