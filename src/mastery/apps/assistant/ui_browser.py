"""The assistant UI driven in a real browser: headless Chromium (Debian's ``chromium``) through Playwright.

What a user does, as steps the browser test and the L31 lab share::

    with browser_page() as page:
        ui = AssistantUI(page, "http://127.0.0.1:8501")
        ui.sign_in(token)
        ui.upload(Path("kiwis.pdf"))                    # "kiwis.pdf: added, 2 chunk(s) added"
        asked = ui.ask("Where do kiwis grow?")          # seconds to the first streamed token, to the whole answer
        ui.open_citation(1)                             # the passage: file, page, text
        ui.expand_steps()                               # the route, its reason, each step

Every wait is Playwright's own (a locator's auto-wait, or a condition checked on each animation frame),
bounded by ``timeout_s``: no sleeps. Playwright's bundled browsers are not downloaded: the system
Chromium is launched by path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastery.core.errors import MasteryError

VIEWPORT = (1200, 800)  # screenshots for the docs page
# the live answer's container (ui.LIVE_KEY) has text: the first token has been drawn
_FIRST_TOKEN_JS = ("() => { const e = document.querySelector('.st-key-live-answer');"
                   " return !!e && e.innerText.trim().length > 0 }")


def chromium_path() -> str:
    """The system Chromium (Debian's ``chromium`` package, installed by ``make system``)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise MasteryError("no chromium on PATH: install Debian's 'chromium' package ('make system')")
    return found


@contextlib.contextmanager
def browser_page(viewport: tuple[int, int] = VIEWPORT) -> Iterator[Any]:
    """A Playwright page in headless Chromium; the browser is closed on exit."""
    from playwright.sync_api import sync_playwright

    # Chromium refuses to run as root with its sandbox on; a root container has no user namespace to give it.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            yield page
        finally:
            browser.close()


@dataclass(frozen=True)
class Asked:
    question: str
    answer: str  # the finished answer's text as the page shows it
    first_token_s: float  # from pressing Enter to the first streamed token drawn
    total_s: float  # from pressing Enter to the finished answer drawn with its citations and steps


class AssistantUI:
    """The UI at ``url`` in ``page``; each method returns once the page shows its result."""

    def __init__(self, page: Any, url: str, timeout_s: float = 60.0) -> None:
        self.page, self.url, self.timeout_ms = page, url, timeout_s * 1000

    def _visible(self, locator: Any) -> Any:
        from playwright.sync_api import expect

        expect(locator).to_be_visible(timeout=self.timeout_ms)
        return locator

    def sign_in(self, token: str) -> None:
        self.page.goto(self.url)
        self._visible(self.page.get_by_label("API key", exact=True)).fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self._visible(self.page.get_by_role("button", name="New session"))

    def upload(self, path: Path) -> str:
        """Add ``path`` to the knowledge base from the sidebar; the confirmation shown."""
        self.page.locator("section[data-testid='stSidebar'] input[type='file']").set_input_files(str(path))
        self._visible(self.page.get_by_text(path.name, exact=True).first)  # the chosen file is listed
        self.page.get_by_role("button", name="Add to the knowledge base").click()
        note = self._visible(self.page.get_by_text(f"{path.name}: ").first)
        return str(note.inner_text())

    def ask(self, question: str) -> Asked:
        """Ask in the chat box; wait for the first streamed token, then for the finished answer."""
        from playwright.sync_api import expect

        steps = self.page.get_by_text("Steps · route")
        before = steps.count()
        box = self._visible(self.page.get_by_placeholder("Ask about your documents"))
        box.fill(question)
        start = time.perf_counter()
        box.press("Enter")
        self.page.wait_for_function(_FIRST_TOKEN_JS, polling="raf", timeout=self.timeout_ms)
        first = time.perf_counter() - start
        # the finished turn is drawn from the history: one more "Steps" expander, the live box gone
        expect(steps).to_have_count(before + 1, timeout=self.timeout_ms)
        expect(self.page.locator(".st-key-live-answer")).to_have_count(0, timeout=self.timeout_ms)
        total = time.perf_counter() - start
        answer = self.page.get_by_test_id("stChatMessage").last.get_by_test_id("stMarkdownContainer").first
        return Asked(question, str(answer.inner_text()), first, total)

    def open_citation(self, n: int = 1) -> str:
        """Click the last answer's citation ``[n]``; the passage it opens (file, page, text)."""
        self.page.get_by_role("button", name=f"[{n}] ").last.click()
        body = self._visible(self.page.get_by_test_id("stPopoverBody").last)
        self._visible(body.get_by_text(f"passage [{n}]"))
        return str(body.inner_text())

    def close_popover(self) -> None:
        from playwright.sync_api import expect

        self.page.keyboard.press("Escape")
        expect(self.page.get_by_test_id("stPopoverBody")).to_have_count(0, timeout=self.timeout_ms)

    def expand_steps(self) -> str:
        """Open the last answer's "Steps" expander; its text (route, reason, each step)."""
        summary = self.page.get_by_text("Steps · route").last
        summary.click()
        expander = self.page.get_by_test_id("stExpander").filter(has=summary).last
        details = self._visible(expander.get_by_test_id("stExpanderDetails"))
        self._visible(details.get_by_text("decided by"))
        return str(details.inner_text())

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "disabled": running animations (an expander opening) are fast-forwarded to their end first
        self.page.screenshot(path=str(path), animations="disabled")
        return path
