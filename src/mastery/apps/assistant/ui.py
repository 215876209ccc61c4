"""The Research Assistant in the browser: a Streamlit app over the assistant API.

    mastery assistant ui --api-url http://127.0.0.1:8020      # or: mastery assistant up (LLM, API and this UI)

It signs in with an API key (``mastery keys create --owner NAME`` prints one; ``MASTERY_ASSISTANT_UI_KEY``
signs in without asking, for local use), and then only talks to the API (:mod:`.ui_client`):

- the answer is markdown, streamed as the API's ``token`` events arrive, with the steps of the graph shown
  live in a status box; when the stream ends the page is drawn again from the stored history, so a live
  answer and one from an old session look the same;
- each ``[n]`` the answer cites is a button under it that opens the passage: its file and page, the passage
  text, and the whole page as the knowledge base holds it (``GET /documents/{source}/pages/{page}``);
- "Steps" expands the route taken and why, and each node's result; "Thought process" holds a reasoning
  model's ``<think>`` part, never mixed into the answer;
- the sidebar holds the sessions (the API's history: pick one to read it and continue it), the upload of a
  document into the knowledge base, and a route override.

Streamlit runs this file as ``__main__`` on every interaction; importing it runs nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from mastery.apps.assistant.ui_client import APIError, AssistantClient, TurnView, citation_label, session_label

DEFAULT_API_URL = "http://127.0.0.1:8020"
UPLOAD_TYPES = ("pdf", "md", "markdown", "txt", "text", "rst", "html", "htm")  # what the knowledge base reads
ROUTES = {"auto": None, "documents": "kb", "web": "web", "direct": "direct"}
ASK_PLACEHOLDER = "Ask about your documents"
LIVE_KEY = "live-answer"  # the streamed answer's container: CSS class st-key-live-answer (the browser test waits on it)
CURSOR = " ▌"
LONG_TEXT_CHARS = 400  # a longer passage or page scrolls inside the opened citation, PASSAGE_HEIGHT pixels high
PASSAGE_HEIGHT = 200
_HEADING = re.compile(r"^#{1,4} ", re.MULTILINE)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The script's own arguments (what follows ``--`` on the ``streamlit run`` line)."""
    parser = argparse.ArgumentParser(prog="mastery assistant ui")
    parser.add_argument("--api-url", default=DEFAULT_API_URL)
    return parser.parse_args(argv)


def answer_markdown(text: str) -> str:
    """The answer as markdown for a chat bubble: headings the model copied from a passage ("# Kiwis") shrink to
    the smallest heading, so an answer never outshouts the page around it."""
    return _HEADING.sub("##### ", text.strip())


def main() -> None:
    import streamlit as st

    api_url = parse_args(sys.argv[1:]).api_url
    st.set_page_config(page_title="Research Assistant", page_icon=":material/menu_book:", layout="wide")
    st.set_option("client.toolbarMode", "minimal")  # no "Deploy" button: this app is served by its owner
    client = _signed_in(st, api_url)
    if client is None:
        return
    route = _sidebar(st, client)
    _conversation(st, client, route)


# -- signing in -------------------------------------------------------------------------------------------
def _signed_in(st: Any, api_url: str) -> AssistantClient | None:
    """The client of the signed-in key, or None after drawing the sign-in form."""
    from mastery.core.settings import get_settings

    state = st.session_state
    if state.get("client") is not None:
        return state.client
    configured = get_settings().assistant_ui_key
    if (configured is not None and not state.get("signed_out")
            and _try_key(st, api_url, configured.get_secret_value())):
        return state.client
    st.title("Research Assistant")
    st.caption(f"API: {api_url}")
    with st.form("sign-in"):
        key = st.text_input("API key", type="password", placeholder="mst_...",
                            help="'mastery keys create --owner NAME' prints one; it is sent only to the API")
        if st.form_submit_button("Sign in", type="primary") and key and _try_key(st, api_url, key.strip()):
            st.rerun()
    return None


def _try_key(st: Any, api_url: str, token: str) -> bool:
    client = AssistantClient(api_url, token)
    try:
        client.sessions()  # the cheapest call that needs the key
    except APIError as exc:
        client.close()
        st.error("That key was refused: " + exc.message if exc.status == 401 else exc.message)
        return False
    st.session_state.client = client
    return True


# -- sidebar ----------------------------------------------------------------------------------------------
def _sidebar(st: Any, client: AssistantClient) -> str | None:
    """Sessions, upload, documents, route override; returns the route to ask with (None: the router's)."""
    state = st.session_state
    side = st.sidebar
    side.title("Research Assistant")
    side.caption(f"signed in to {client.base_url}")
    if side.button("Sign out"):
        client.close()
        state.client, state.signed_out, state.session_id = None, True, None
        st.rerun()

    if side.button("New session", icon=":material/add:", type="primary", width="stretch"):
        state.session_id = None
        st.rerun()
    side.subheader("Sessions")
    try:
        sessions = client.sessions()
    except APIError as exc:
        side.error(exc.message)
        sessions = []
    if not sessions:
        side.caption("No sessions yet: ask a question to start one.")
    for s in sessions:
        current = s["id"] == state.get("session_id")
        if side.button(session_label(s["title"], s["turns"]), key=f"session-{s['id']}",
                       type="primary" if current else "secondary", width="stretch", icon=":material/chat:"):
            state.session_id = s["id"]
            st.rerun()

    side.subheader("Documents")
    with side.form("upload", clear_on_submit=True):
        file = st.file_uploader("Add a document", type=list(UPLOAD_TYPES))
        if st.form_submit_button("Add to the knowledge base", icon=":material/upload:") and file is not None:
            with st.spinner(f"adding {file.name} to the knowledge base…"):
                try:
                    done = client.upload(file.name, file.getvalue())
                    state.upload_note = ("success", f"{done['source']}: {done['status']}, "
                                                    f"{done['chunks_added']} chunk(s) added")
                except APIError as exc:
                    state.upload_note = ("error", f"{file.name}: {exc.message}")
    note = state.get("upload_note")
    if note:
        getattr(side, note[0])(note[1])
    try:
        documents = client.documents()
    except APIError as exc:
        documents = []
        side.error(exc.message)
    with side.expander(f"Knowledge base: {len(documents)} document(s)"):
        for d in documents:
            st.markdown(f"- `{d['source']}`: {d['pages']} page(s), {d['chunks']} chunk(s)")
    choice = side.segmented_control("Route", list(ROUTES), default="auto", key="route",
                                    help="auto: the router decides between the documents, the web and a direct "
                                         "answer, and says why")
    return ROUTES.get(choice or "auto")


# -- the conversation -------------------------------------------------------------------------------------
def _conversation(st: Any, client: AssistantClient, route: str | None) -> None:
    state = st.session_state
    sid = state.get("session_id")
    if sid:
        try:
            session = client.session(sid)
        except APIError as exc:
            st.error(exc.message)
            state.session_id = None
            return
        st.header(session["title"])
        for i, stored in enumerate(session["history"]):
            _turn(st, client, TurnView.from_stored(stored), key=f"t{i}-{stored['id'][:8]}")
    else:
        st.header("New session")
        st.caption("Answers cite the passages they come from as [n]: open one to read it, with its file and page.")
    question = st.chat_input(ASK_PLACEHOLDER, max_chars=2000)
    if question:
        _ask(st, client, question, route)


def _ask(st: Any, client: AssistantClient, question: str, route: str | None) -> None:
    """Stream one answer into the page, then redraw it from the stored history."""
    state = st.session_state
    with st.chat_message("user"):
        st.markdown(question)
    try:
        if not state.get("session_id"):
            state.session_id = client.create_session()["id"]  # titled by its first question
        turn = TurnView(question=question)
        with st.chat_message("assistant"):
            status = st.status("Thinking…", expanded=False)
            answer = st.container(key=LIVE_KEY).empty()
            for kind, data in client.ask(state.session_id, question, route):
                turn.apply(kind, data)
                if kind == "route":
                    status.update(label=f"Route: {data.get('route')} ({data.get('decided_by')})")
                    status.markdown(f"**route** → `{data.get('route')}`: {data.get('reason', '')}")
                elif kind == "step" and data.get("status") == "end" and data.get("name") != "route":
                    status.markdown(f"**{data.get('name')}**: {data.get('detail', '')}")
                elif kind == "token":
                    answer.markdown(answer_markdown(turn.text) + CURSOR)
            status.update(state="error" if turn.error else "complete")
    except APIError as exc:
        st.error(exc.message)
        return
    st.rerun()  # draw the finished turn as the history holds it: citations, steps, thought


def _turn(st: Any, client: AssistantClient, turn: TurnView, key: str) -> None:
    with st.chat_message("user"):
        st.markdown(turn.question)
    with st.chat_message("assistant"):
        if turn.error:
            st.error(turn.error)
        if not turn.done:
            st.info("Still being answered: open the session again in a moment.")
        st.markdown(answer_markdown(turn.text) or "_(no answer)_")
        cited = turn.cited_passages()
        if cited:
            row = st.container(horizontal=True, key=f"{key}-citations")
            for passage in cited:
                with row.popover(citation_label(passage), key=f"{key}-cite-{passage['n']}",
                                 icon=":material/format_quote:"):
                    _passage(st, client, passage)
        if turn.unsupported:
            st.warning("Not supported by its passage (flagged by the citation check): "
                       + " / ".join(turn.unsupported))
        _steps(st, turn, key)
        if turn.thought:
            with st.expander("Thought process", icon=":material/psychology:", key=f"{key}-thought"):
                st.text(turn.thought)


def _passage(st: Any, client: AssistantClient, passage: dict[str, Any]) -> None:
    """What a citation opens: where the passage is, the passage, and the whole page around it."""
    source, page = str(passage.get("source", "")), passage.get("page")
    if passage.get("kind") == "web":
        st.markdown(f"**Web result** <{source}>")
        st.text(passage.get("text", ""))
        return
    where = f"page {page}" if page else "no pages"
    st.markdown(f"**{source}** · {where}")
    st.caption(f"passage [{passage.get('n')}]" + (f", retrieval score {passage['score']:.3f}"
                                                   if passage.get("score") is not None else ""))
    text = str(passage.get("text", ""))
    with st.container(height=PASSAGE_HEIGHT if len(text) > LONG_TEXT_CHARS else "content", border=False):
        st.text(text)
    if page is None:
        return
    pages = st.session_state.setdefault("pages", {})
    if (source, page) not in pages:
        try:
            pages[(source, page)] = client.page(source, int(page))["text"]
        except APIError as exc:
            pages[(source, page)] = None
            st.caption(f"(the page is not available: {exc.message})")
    whole = pages[(source, page)]
    if whole:
        st.markdown(f"**The whole {'page ' + str(page) if page else 'document'}**")
        with st.container(height=PASSAGE_HEIGHT if len(whole) > LONG_TEXT_CHARS else "content", border=True):
            st.text(whole)


def _steps(st: Any, turn: TurnView, key: str) -> None:
    route = turn.route or {}
    label = f"Steps · route: {route.get('route', '?')}" + (f" ({route['decided_by']})" if route.get("decided_by")
                                                            else "")
    with st.expander(label, icon=":material/route:", key=f"{key}-steps"):
        if route:
            st.markdown(f"**Route** `{route.get('route')}`, decided by {route.get('decided_by', '?')}: "
                        f"{route.get('reason', '')}")
            if not route.get("web_available", True):
                st.caption("web search is not configured (MASTERY_ASSISTANT_WEB)")
        lines = [f"- **{step.get('name')}**: {step.get('detail') or step.get('status')}"
                 for step in turn.finished_steps() if step.get("name") != "route"]
        if lines:
            st.markdown("\n".join(lines))
        if turn.revised:
            st.caption("the critic sent the draft back once; this is the revision")


if __name__ == "__main__":
    main()
