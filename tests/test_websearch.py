"""The assistant's web search backends against a local HTTP server on 127.0.0.1 that speaks SearXNG's JSON and
DuckDuckGo's HTML, and the brain's web route through them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from mastery.apps.assistant.events import Question
from mastery.apps.assistant.graph import ResearchBrain
from mastery.apps.assistant.websearch import (
    DuckDuckGoSearch,
    SearxngSearch,
    WebSearchError,
    open_web_search,
    parse_duckduckgo_html,
)
from mastery.core.errors import ConfigError
from mastery.llm.fake import ScriptedChat
from tests.test_assistant_graph import MemoryRetriever

SEARXNG = {"query": "libtasn1 license", "number_of_results": 2, "results": [
    {"url": "https://www.gnu.org/software/libtasn1/", "title": "GNU Libtasn1",
     "content": "Libtasn1 is   the ASN.1 library used by GnuTLS.\nIt is licensed under the GNU LGPL 2.1.",
     "engine": "duckduckgo", "engines": ["duckduckgo"], "score": 2.0, "category": "general"},
    {"url": "https://gitlab.com/gnutls/libtasn1", "title": "libtasn1 on GitLab", "content": "",
     "engine": "bing", "score": 1.0},
    {"title": "no url: skipped", "content": "x"},
], "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": []}

# The shape of html.duckduckgo.com/html/ result pages: an ad block first, organic results whose links go through
# the //duckduckgo.com/l/?uddg= redirect, bold query words in titles and snippets.
DDG_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>libtasn1 license at DuckDuckGo</title></head>
<body class="body--html"><div class="serp__results"><div id="links" class="results">
<div class="result results_links results_links_deep result--ad ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a"
      href="https://duckduckgo.com/y.js?ad_domain=asn1-tools.example&amp;ad_provider=bing">Buy ASN.1 tools</a></h2>
    <a class="result__snippet" href="https://duckduckgo.com/y.js?ad_domain=asn1-tools.example">Sponsored link</a>
  </div>
</div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a"
      href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.gnu.org%2Fsoftware%2Flibtasn1%2F&amp;rut=3f1c">GNU
      <b>Libtasn1</b> - GNU Project</a></h2>
    <div class="result__extras"><div class="result__extras__url">
      <a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.gnu.org%2F">
        www.gnu.org/software/libtasn1/</a>
    </div></div>
    <a class="result__snippet" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.gnu.org%2Fsoftware%2Flibtasn1%2F">
      <b>Libtasn1</b> is the ASN.1 library used by GnuTLS &amp; others. It is released under the <b>GNU</b>
      Lesser General Public License version 2.1.</a>
    <div class="clear"></div>
  </div>
</div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a"
      href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fgitlab.com%2Fgnutls%2Flibtasn1&amp;rut=9a0e">gnutls /
      libtasn1</a></h2>
    <a class="result__snippet" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fgitlab.com%2Fgnutls%2Flibtasn1">The
      source repository.</a>
  </div>
</div>
</div></div></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    status = 200
    html_only = False  # a SearXNG that answers its HTML page whatever the format asked
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        type(self).seen.append({"path": url.path, "query": query, "agent": self.headers.get("User-Agent", "")})
        if type(self).status != 200:
            body, kind = b"<html>rate limited</html>", "text/html"
        elif url.path == "/search" and query.get("format") == ["json"] and not type(self).html_only:
            body, kind = json.dumps(SEARXNG).encode(), "application/json"
        elif url.path == "/search":
            body, kind = b"<html>searxng's html page</html>", "text/html"
        elif url.path == "/html/":
            body, kind = DDG_PAGE.encode(), "text/html; charset=utf-8"
        else:
            body, kind = b"not found", "text/plain"
        self.send_response(type(self).status if url.path in ("/search", "/html/") else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.status, _Handler.html_only, _Handler.seen = 200, False, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_searxng_json(server: str) -> None:
    results = SearxngSearch(server + "/").search("  libtasn1 license ", k=5)
    assert [(r.title, r.url) for r in results] == [("GNU Libtasn1", "https://www.gnu.org/software/libtasn1/"),
                                                   ("libtasn1 on GitLab", "https://gitlab.com/gnutls/libtasn1")]
    assert results[0].content == "Libtasn1 is the ASN.1 library used by GnuTLS. It is licensed under the GNU LGPL 2.1."
    assert _Handler.seen[-1]["path"] == "/search"
    assert _Handler.seen[-1]["query"] == {"q": ["libtasn1 license"], "format": ["json"]}
    assert len(SearxngSearch(server).search("libtasn1", k=1)) == 1


def test_searxng_failures(server: str) -> None:
    _Handler.status = 429
    with pytest.raises(WebSearchError, match="HTTP 429"):
        SearxngSearch(server).search("x")
    _Handler.status, _Handler.html_only = 200, True
    with pytest.raises(WebSearchError, match="SearXNG JSON"):
        SearxngSearch(server).search("x")
    with pytest.raises(WebSearchError, match="failed"):
        SearxngSearch("http://127.0.0.1:9").search("x")  # nothing listens on port 9
    with pytest.raises(WebSearchError, match="empty"):
        SearxngSearch(server).search("  ")
    with pytest.raises(ConfigError):
        SearxngSearch("127.0.0.1:8888")


def test_duckduckgo_html(server: str) -> None:
    results = DuckDuckGoSearch(server + "/html/").search("libtasn1 license", k=5)
    assert [r.url for r in results] == ["https://www.gnu.org/software/libtasn1/", "https://gitlab.com/gnutls/libtasn1"]
    assert results[0].title == "GNU Libtasn1 - GNU Project"
    assert results[0].content == ("Libtasn1 is the ASN.1 library used by GnuTLS & others. It is released under the "
                                  "GNU Lesser General Public License version 2.1.")
    assert _Handler.seen[-1]["query"] == {"q": ["libtasn1 license"]} and "Mozilla" in _Handler.seen[-1]["agent"]
    assert not any("Sponsored" in r.content or "asn1-tools" in r.url for r in results)
    _Handler.status = 403
    with pytest.raises(WebSearchError, match="HTTP 403"):
        DuckDuckGoSearch(server + "/html/").search("x")


def test_duckduckgo_parser_alone() -> None:
    assert parse_duckduckgo_html("<html><body>No results.</body></html>") == []
    direct = ('<div class="result"><a class="result__a" href="https://example.org/a">A <b>b</b></a>'
              '<a class="result__snippet" href="x">snip</a></div>')
    assert [(r.title, r.url, r.content) for r in parse_duckduckgo_html(direct)] == [("A b", "https://example.org/a",
                                                                                     "snip")]


def test_open_web_search_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASTERY_ASSISTANT_WEB", raising=False)
    assert open_web_search() is None  # the offline default
    monkeypatch.setenv("MASTERY_ASSISTANT_WEB", "searxng")
    monkeypatch.delenv("MASTERY_SEARXNG_URL", raising=False)
    with pytest.raises(ConfigError, match="MASTERY_SEARXNG_URL"):
        open_web_search()
    monkeypatch.setenv("MASTERY_SEARXNG_URL", "http://127.0.0.1:8888")
    web = open_web_search()
    assert isinstance(web, SearxngSearch) and web.base_url == "http://127.0.0.1:8888"
    monkeypatch.setenv("MASTERY_ASSISTANT_WEB", "duckduckgo")
    assert isinstance(open_web_search(), DuckDuckGoSearch)
    monkeypatch.setenv("MASTERY_ASSISTANT_WEB", "bing")
    with pytest.raises(ConfigError, match="MASTERY_ASSISTANT_WEB"):
        open_web_search()


@pytest.mark.parametrize("backend", ["searxng", "duckduckgo"])
def test_brain_web_route_through_a_local_backend(server: str, backend: str) -> None:
    web = SearxngSearch(server) if backend == "searxng" else DuckDuckGoSearch(server + "/html/")

    def respond(messages: list[dict[str, Any]], system: str) -> str:
        system = system or messages[0].get("content", "")
        if "You route" in system:
            return '{"route": "web", "reason": "the license may have changed"}'
        if "You check an answer" in system:
            return '{"ok": true, "problem": ""}'
        return "Libtasn1 is licensed under the GNU Lesser General Public License version 2.1 [2]."

    events = list(ResearchBrain(ScriptedChat(respond), MemoryRetriever(), web=web).answer(
        Question("What is the license of libtasn1 today?", "s1", "alice")))
    route = next(e.data for e in events if e.kind == "route")
    assert route["route"] == "web" and route["web_available"]
    passages = next(e.data for e in events if e.kind == "passages")["passages"]
    assert [p["kind"] for p in passages] == ["web", "web"]
    assert passages[-1]["source"] == "https://www.gnu.org/software/libtasn1/"  # the top result is last, [2]
    answer = next(e.data for e in events if e.kind == "answer")
    assert not answer["refused"] and answer["citations"][0]["n"] == 2 and answer["citations"][0]["supported"]
