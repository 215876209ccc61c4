"""Pluggable search for the research crew: ``search(query, k) -> list[Hit]``.

- :class:`KBSearch` (offline, the default): the Chroma knowledge base when its collection has documents,
  else a hybrid retriever (BM25, plus MiniLM when ``dense``) over the ATT&CK techniques.
- :class:`DuckDuckGoSearch` and :class:`SearxNGSearch`: web search over HTTP (httpx, bounded timeouts).
  They need the network, so tests only feed them canned responses through ``parse``.

``make_search("kb" | "duckduckgo" | "searxng", ...)`` builds one from a config string.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlparse

from mastery.core.errors import MasteryError
from mastery.retrieval.types import Document, Hit

log = logging.getLogger(__name__)

SEARCH_BACKENDS = ("kb", "duckduckgo", "searxng")
USER_AGENT = "mastery-research-crew/1.0 (+https://github.com/; offline-first)"


class SearchError(MasteryError):
    """A search backend cannot answer: no network, a bad URL, an unparseable page, an empty query."""


@runtime_checkable
class SearchBackend(Protocol):
    name: str

    def search(self, query: str, k: int = 5) -> list[Hit]: ...


def _check(query: str, k: int) -> str:
    if not isinstance(query, str) or not query.strip():
        raise SearchError("empty search query: give some words to search for")
    if k < 1:
        raise SearchError(f"k must be >= 1, got {k}")
    return query.strip()


# -- offline ---------------------------------------------------------------------------------------
class KBSearch:
    """Offline search over the local knowledge base.

    With ``kb`` (a :class:`mastery.retrieval.kb.KnowledgeBase`) whose ``collection`` holds documents, hits come
    from :func:`mastery.llm.rag.retrieve` (MiniLM + BM25 fused). Otherwise (no KB, or an empty/unknown
    collection) a :class:`mastery.retrieval.hybrid.HybridRetriever` is built over ``documents`` (default: the
    ATT&CK techniques, descriptions cut to ``max_chars``): BM25 alone, or BM25 + MiniLM when ``dense``.
    """

    name = "kb"

    def __init__(self, kb: Any = None, collection: str = "attack", documents: Sequence[Document] | None = None,
                 dense: bool = False, max_chars: int | None = 1500, embed_cache: str | None = None) -> None:
        self.kb, self.collection = kb, collection
        self._documents = list(documents) if documents is not None else None
        self.dense, self.max_chars, self.embed_cache = dense, max_chars, embed_cache
        self._retriever: Any = None
        self.source = ""  # "chroma:<collection>" or "hybrid:<n> docs", once the first search decided

    def _kb_ready(self) -> bool:
        if self.kb is None:
            return False
        try:
            return self.kb.count(self.collection) > 0
        except MasteryError as exc:  # unknown collection: fall back, but say so
            log.info("event=kb_search_fallback reason=%r", str(exc))
            return False

    def _build_retriever(self) -> Any:
        from mastery.retrieval.hybrid import technique_search

        docs = self._documents
        if docs is None:
            from mastery.retrieval.attack import technique_documents

            docs = technique_documents(max_chars=self.max_chars)
        if not docs:
            raise SearchError("the offline search has no documents to search")
        model = None
        if self.dense:
            from mastery.core.runtime import torch_device
            from mastery.text.embed import load_sentence_model

            model = load_sentence_model("all-minilm-l6-v2", device=torch_device())
        self.source = f"hybrid:{len(docs)} docs ({'bm25+dense' if self.dense else 'bm25'})"
        return technique_search(docs, model, cache_dir=Path(self.embed_cache) if self.embed_cache else None)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        query = _check(query, k)
        if self._retriever is None and self.source == "" and self._kb_ready():
            self.source = f"chroma:{self.collection}"
        if self.source.startswith("chroma:"):
            from mastery.llm.rag import retrieve

            hits, _ = retrieve(self.kb, query, self.collection, k=k, method="hybrid")
            return hits
        if self._retriever is None:
            self._retriever = self._build_retriever()
        return self._retriever.search(query, k)


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
        query = _check(query, k)
        return self.parse(self._get(self.URL, {"q": query}).text, k)

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
        query = _check(query, k)
        response = self._get(f"{self.url}/search", {"q": query, "format": "json"})
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
                dense: bool = False, timeout_s: float = 10.0) -> SearchBackend:
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
