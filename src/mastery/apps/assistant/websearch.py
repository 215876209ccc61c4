"""Web search for the assistant: one small protocol, a SearXNG backend and a DuckDuckGo backend.

    web = open_web_search()                 # from MASTERY_ASSISTANT_WEB; None when "none" (the offline default)
    for r in web.search("libtasn1 license", k=5):
        r.title, r.url, r.content

- :class:`SearxngSearch` asks a SearXNG instance's JSON API: ``GET {base}/search?q=...&format=json`` answers
  ``{"results": [{"title", "url", "content"}, ...]}`` (the instance must list ``json`` in its
  ``search.formats``, otherwise it answers 403).
- :class:`DuckDuckGoSearch` reads DuckDuckGo's HTML page (``https://html.duckduckgo.com/html/?q=``) with the
  standard library's ``HTMLParser``: the ``duckduckgo_search`` / ``ddgs`` packages are not in the lock. A
  result is an ``a.result__a`` (title; its ``href`` is a ``//duckduckgo.com/l/?uddg=<url>`` redirect) and an
  ``a.result__snippet`` inside a ``div.result``; ads (``result--ad``) are skipped.

Failures (server down, HTTP error, a page that is not what the backend speaks) raise :class:`WebSearchError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from mastery.core.errors import ConfigError, MasteryError

log = logging.getLogger(__name__)

DDG_HTML_URL = "https://html.duckduckgo.com/html/"
WEB_BACKENDS = ("none", "searxng", "duckduckgo")
# DuckDuckGo answers an unknown client with a challenge page; a browser-like agent gets the result list.
_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


class WebSearchError(MasteryError):
    """The web search backend failed or answered something it should not."""


@dataclass(frozen=True)
class WebResult:
    title: str
    url: str
    content: str  # the snippet the engine shows under the title


class WebSearch(Protocol):
    """Anything that answers ``search(query, k)`` with at most ``k`` web results, best first."""

    name: str

    def search(self, query: str, k: int = 5) -> list[WebResult]: ...


def _get(url: str, params: dict[str, str], timeout_s: float, headers: dict[str, str] | None = None) -> Any:
    import httpx

    try:
        response = httpx.get(url, params=params, timeout=timeout_s, headers=headers, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise WebSearchError(f"web search at {url} failed: {type(exc).__name__}: {str(exc)[:160]}") from None
    if response.status_code != 200:
        raise WebSearchError(f"web search at {url} answered HTTP {response.status_code}")
    return response


def _check(query: str, k: int) -> None:
    if not isinstance(query, str) or not query.strip():
        raise WebSearchError("the web search query is empty")
    if k < 1:
        raise WebSearchError(f"k must be >= 1, got {k}")


class SearxngSearch:
    """A SearXNG instance's JSON API (``base_url`` like ``http://127.0.0.1:8888``)."""

    name = "searxng"

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"SearXNG URL must start with http:// or https://, got {base_url!r} "
                              "(MASTERY_SEARXNG_URL)")
        self.base_url, self.timeout_s = base_url.rstrip("/"), timeout_s

    def search(self, query: str, k: int = 5) -> list[WebResult]:
        _check(query, k)
        url = f"{self.base_url}/search"
        response = _get(url, {"q": query.strip(), "format": "json"}, self.timeout_s)
        try:
            results = response.json()["results"]
            out = [WebResult(str(r.get("title") or "").strip(), str(r["url"]), " ".join(str(r.get("content") or "")
                                                                                     .split()))
                   for r in results if isinstance(r, dict) and r.get("url")]
        except (ValueError, KeyError, TypeError):
            raise WebSearchError(f"{url} did not answer SearXNG JSON (is 'json' in its search.formats?)") from None
        log.info("event=web_search backend=searxng results=%d", len(out))
        return out[:k]


class _DuckDuckGoPage(HTMLParser):
    """Collects (title, href, snippet) from DuckDuckGo's HTML result list."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.results: list[dict[str, str]] = []
        self._field: str | None = None  # "title" or "content" while inside that link
        self._depth = 0  # <a> nesting inside the field
        self._ad = False  # inside an ad block's div

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if tag == "div" and "result" in classes:
            self._ad = "result--ad" in classes
            return
        if self._field is not None and tag == "a":
            self._depth += 1
        elif tag == "a" and not self._ad and "result__a" in classes:
            self.results.append({"title": "", "href": a.get("href") or "", "content": ""})
            self._field, self._depth = "title", 1
        elif tag == "a" and not self._ad and "result__snippet" in classes and self.results:
            self._field, self._depth = "content", 1

    def handle_endtag(self, tag: str) -> None:
        if self._field is not None and tag == "a":
            self._depth -= 1
            if self._depth == 0:
                self._field = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self.results[-1][self._field] += data


def result_url(href: str) -> str:
    """The target of a DuckDuckGo result link: ``//duckduckgo.com/l/?uddg=<quoted url>&rut=...`` -> the url."""
    parsed = urlparse(href if "://" in href else f"https:{href}" if href.startswith("//") else href)
    if parsed.path.startswith("/l/") and "uddg" in (query := parse_qs(parsed.query)):
        return query["uddg"][0]
    return href


def parse_duckduckgo_html(html: str) -> list[WebResult]:
    """The organic results of a DuckDuckGo HTML result page, in page order."""
    page = _DuckDuckGoPage()
    page.feed(html)
    page.close()
    return [WebResult(" ".join(r["title"].split()), result_url(r["href"]), " ".join(r["content"].split()))
            for r in page.results if r["href"]]


class DuckDuckGoSearch:
    """DuckDuckGo's HTML endpoint, parsed with the standard library (``base_url`` for a local test server)."""

    name = "duckduckgo"

    def __init__(self, base_url: str = DDG_HTML_URL, *, timeout_s: float = 10.0) -> None:
        self.base_url, self.timeout_s = base_url, timeout_s

    def search(self, query: str, k: int = 5) -> list[WebResult]:
        _check(query, k)
        response = _get(self.base_url, {"q": query.strip()}, self.timeout_s, headers={"User-Agent": _USER_AGENT})
        results = parse_duckduckgo_html(response.text)
        if not results and "result" not in response.text:
            raise WebSearchError(f"{self.base_url} answered a page without a result list (a challenge page?)")
        log.info("event=web_search backend=duckduckgo results=%d", len(results))
        return results[:k]


def open_web_search(backend: str | None = None, searxng_url: str | None = None, *,
                    timeout_s: float = 10.0) -> WebSearch | None:
    """The configured backend (``MASTERY_ASSISTANT_WEB``, ``MASTERY_SEARXNG_URL``; arguments win), None for "none"."""
    from mastery.core.settings import get_settings

    settings = get_settings()
    backend = (backend or settings.assistant_web).lower()
    if backend not in WEB_BACKENDS:
        raise ConfigError(f"web search backend must be one of {', '.join(WEB_BACKENDS)}, got {backend!r}")
    if backend == "none":
        return None
    if backend == "searxng":
        url = searxng_url or settings.searxng_url
        if not url:
            raise ConfigError("the searxng web backend needs MASTERY_SEARXNG_URL (e.g. http://127.0.0.1:8888)")
        return SearxngSearch(url, timeout_s=timeout_s)
    return DuckDuckGoSearch(timeout_s=timeout_s)
