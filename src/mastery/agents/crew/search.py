"""Pluggable search for the research crew: ``search(query, k) -> list[Hit]``.

- :class:`KBSearch` (offline, the default): the one ATT&CK search
  (:func:`mastery.retrieval.attack.open_attack_search`), which the ReAct agent's ``kb_search`` also uses.
- :class:`DuckDuckGoSearch` and :class:`SearxNGSearch`: web search over HTTP (httpx, bounded timeouts).
  They need the network, so tests only feed them canned responses through ``parse``.

``make_search("kb" | "duckduckgo" | "searxng", ...)`` builds one from a config string.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from mastery.core.errors import MasteryError
from mastery.retrieval.types import Document, Hit, Retriever, check_query

log = logging.getLogger(__name__)

SEARCH_BACKENDS = ("kb", "duckduckgo", "searxng")
USER_AGENT = "mastery-research-crew/1.0 (+https://github.com/; offline-first)"


class SearchError(MasteryError):
    """A web search backend cannot answer: no network, a bad URL, an unparseable page. (An empty query or a bad
    ``k`` is a :class:`~mastery.retrieval.types.RetrievalError`, as for every retriever.)"""


# A search backend is a retriever: the crew searches through the same contract as everything else.
SearchBackend = Retriever


# -- offline ---------------------------------------------------------------------------------------
class KBSearch:
    """Offline search over the ATT&CK techniques: :func:`mastery.retrieval.attack.open_attack_search`, the same
    search (and so the same hits) as the ReAct agent's ``kb_search`` tool.

    The knowledge base's ``collection`` (``kb``, default the configured one) when it holds documents, else an
    in-memory index over ``documents`` (default: every current technique). ``dense=False``: BM25 alone, no model
    loaded (tiny presets). Opened on the first search, so making one costs nothing.
    """

    name = "kb"

    def __init__(self, kb: Any = None, collection: str = "attack", documents: Sequence[Document] | None = None,
                 dense: bool = True) -> None:
        self.kb, self.collection, self.dense = kb, collection, dense
        self._documents = list(documents) if documents is not None else None
        self._search: Any = None

    @property
    def source(self) -> str:
        """Where the search looks and how ("" until the first search opened it)."""
        return f"{self._search.source}; {self._search.name}" if self._search is not None else ""

    def search(self, query: str, k: int = 5) -> list[Hit]:
        from mastery.retrieval.attack import open_attack_search

        check_query(query, k)
        if self._search is None:
            self._search = open_attack_search(self.kb, self.collection, documents=self._documents, dense=self.dense)
        return self._search.search(query, k)


# -- web ---------------------------------------------------------------------------------------------
class _WebSearch:
    name = "web"

    def __init__(self, timeout_s: float = 10.0, client: Any = None) -> None:
        self.timeout_s = timeout_s
        self._client = client  # an httpx.Client (tests pass one with a MockTransport)

    def _get(self, url: str, params: dict[str, str]) -> Any:
        import httpx

        client = self._client or httpx.Client(timeout=self.timeout_s, headers={"User-Agent": USER_AGENT},
                                              follow_redirects=True)
        try:
            response = client.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise SearchError(f"{self.name} search timed out after {self.timeout_s:g}s ({url})") from exc
        except httpx.HTTPError as exc:
            raise SearchError(f"{self.name} search cannot reach {url} ({type(exc).__name__}: {exc}); no network? "
                              "use --search kb for the offline knowledge base") from exc
        finally:
            if self._client is None:
                client.close()
        if response.status_code != 200:
            raise SearchError(f"{self.name} search at {url} answered HTTP {response.status_code}")
        return response


def _web_hit(rank: int, title: str, url: str, snippet: str, engine: str) -> Hit:
    text = f"{title}\n{snippet}".strip()
    return Hit(id=url, text=text, score=1.0 / rank, rank=rank,
               metadata={"source": url, "title": title, "url": url, "engine": engine})


_DDG_RESULT = re.compile(
    r'<a[^>]*class="result__a"[^>]*href="(?P<href>[^"]+)"[^>]*>(?P<title>.*?)</a>.*?'
    r'(?:<a[^>]*class="result__snippet"[^>]*>(?P<snippet>.*?)</a>|(?=<a[^>]*class="result__a"))', re.S)
_TAG = re.compile(r"<[^>]+>")


def _clean(fragment: str | None) -> str:
    return " ".join(html.unescape(_TAG.sub("", fragment or "")).split())


class DuckDuckGoSearch(_WebSearch):
    """DuckDuckGo's HTML endpoint (no API key). Its markup is not an API: when it changes, ``parse`` finds
    nothing and says so rather than returning an empty list silently."""

    name = "duckduckgo"
    URL = "https://html.duckduckgo.com/html/"

    def search(self, query: str, k: int = 5) -> list[Hit]:
        check_query(query, k)
        return self.parse(self._get(self.URL, {"q": query.strip()}).text, k)

    @staticmethod
    def parse(page: str, k: int = 5) -> list[Hit]:
        hits: list[Hit] = []
        for m in _DDG_RESULT.finditer(page):
            href = html.unescape(m.group("href"))
            if "uddg=" in href:  # DuckDuckGo wraps result links in a redirect: /l/?uddg=<quoted url>
                href = unquote(parse_qs(urlparse(href).query).get("uddg", [href])[0])
            if href.startswith("//"):
                href = "https:" + href
            hits.append(_web_hit(len(hits) + 1, _clean(m.group("title")), href, _clean(m.group("snippet")),
                                 "duckduckgo"))
            if len(hits) == k:
                break
        if not hits and "result__a" not in page and "no-results" not in page:
            raise SearchError("could not read DuckDuckGo's result page (its markup changed, or a captcha page)")
        return hits


class SearxNGSearch(_WebSearch):
    """A SearxNG instance's JSON API (``format=json`` must be enabled in its settings.yml)."""

    name = "searxng"

    def __init__(self, url: str = "http://127.0.0.1:8888", timeout_s: float = 10.0, client: Any = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise SearchError(f"SearxNG URL must start with http:// or https://, got {url!r}")
        super().__init__(timeout_s, client)
        self.url = url.rstrip("/")

    def search(self, query: str, k: int = 5) -> list[Hit]:
        check_query(query, k)
        response = self._get(f"{self.url}/search", {"q": query.strip(), "format": "json"})
        try:
            payload = response.json()
        except ValueError as exc:
            raise SearchError(f"SearxNG at {self.url} did not answer JSON (enable 'json' under search.formats "
                              "in its settings.yml)") from exc
        return self.parse(payload, k)

    @staticmethod
    def parse(payload: Any, k: int = 5) -> list[Hit]:
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise SearchError("SearxNG answer has no 'results' list")
        hits: list[Hit] = []
        for item in payload["results"]:
            if not isinstance(item, dict) or not item.get("url"):
                continue
            hits.append(_web_hit(len(hits) + 1, str(item.get("title", "")), str(item["url"]),
                                 _clean(str(item.get("content", ""))), str(item.get("engine", "searxng"))))
            if len(hits) == k:
                break
        return hits


def make_search(name: str = "kb", *, searxng_url: str | None = None, kb: Any = None, collection: str = "attack",
                dense: bool = True, timeout_s: float = 10.0) -> SearchBackend:
    """A backend from its config name: ``kb`` (offline), ``duckduckgo`` or ``searxng`` (needs ``searxng_url``)."""
    if name == "kb":
        return KBSearch(kb=kb, collection=collection, dense=dense)
    if name == "duckduckgo":
        return DuckDuckGoSearch(timeout_s=timeout_s)
    if name == "searxng":
        if not searxng_url:
            raise SearchError("the searxng backend needs a URL (--searxng-url http://host:port)")
        return SearxNGSearch(searxng_url, timeout_s=timeout_s)
    raise SearchError(f"unknown search backend {name!r}; choose one of {', '.join(SEARCH_BACKENDS)}")
