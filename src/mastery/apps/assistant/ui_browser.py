"""The assistant UI driven in a real browser: headless Chromium (Debian's ``chromium``) through Playwright.

What a user does, as steps the browser test and the L31 lab share::

    with local_assistant(folder, llm="fake") as stack, browser_page() as page:   # mastery assistant up ... down
        ui = AssistantUI(page, stack.ui_url)
        ui.sign_in(stack.token)
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

from mastery.apps.assistant.ui_client import session_label
from mastery.core.errors import MasteryError

VIEWPORT = (1200, 800)  # screenshots for the docs page
# the live answer's container (ui.LIVE_KEY) has text: the first token has been drawn
_FIRST_TOKEN_JS = ("() => { const e = document.querySelector('.st-key-live-answer');"
                   " return !!e && e.innerText.trim().length > 0 }")


@dataclass
class LocalAssistant:
    """A stack started by ``mastery assistant up`` in a private folder: its UI, its API and a key for it."""

    ui_url: str
    api_url: str
    token: str
    state_dir: Path
    services: tuple[str, ...]
    up_seconds: float
    down_output: str = ""  # what ``mastery assistant down`` printed, once it ran
    down_code: int | None = None
    down_seconds: float = 0.0


@contextlib.contextmanager
def local_assistant(folder: Path, llm: str = "fake", model: str | None = None,
                    timeout_s: float = 180.0) -> Iterator[LocalAssistant]:
    """``mastery assistant up`` (LLM, API, UI on free 127.0.0.1 ports) with its own key file, knowledge base and
    history under ``folder``, as a user runs it; ``mastery assistant down`` on exit, whatever happened."""
    import subprocess
    import sys

    from mastery.ops.stack import read_state
    from mastery.serving.auth import KeyStore
    from mastery.serving.server import free_port

    folder.mkdir(parents=True, exist_ok=True)
    token = KeyStore(folder / "api-keys.json").create("ui")[1]
    env = {**os.environ, "MASTERY_API_KEYS_FILE": str(folder / "api-keys.json"), "MASTERY_KB_DIR": str(folder / "kb")}
    state_dir = folder / "stack"
    api, llm_port, ui = free_port(), free_port(), free_port()

    def mastery(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mastery.cli", "assistant", *args], capture_output=True,
                              text=True, timeout=timeout_s + 60, env=env)

    start = time.perf_counter()
    up = mastery("up", "--llm", llm, *(("--model", model) if model else ()), "--dir", str(state_dir), "--port",
                 str(api), "--llm-port", str(llm_port), "--ui-port", str(ui), "--data-dir", str(folder / "data"),
                 "--timeout", str(timeout_s))
    stack = LocalAssistant(f"http://127.0.0.1:{ui}", f"http://127.0.0.1:{api}", token, state_dir,
                           tuple((read_state(state_dir) or {}).get("services", {})), time.perf_counter() - start)
    try:
        if up.returncode != 0:
            raise MasteryError(f"'mastery assistant up' failed: {(up.stderr or up.stdout).strip()[-500:]}")
        yield stack
    finally:
        start = time.perf_counter()
        down = mastery("down", "--dir", str(state_dir))
        stack.down_output, stack.down_code = down.stdout + down.stderr, down.returncode
        stack.down_seconds = time.perf_counter() - start


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
        self._submit_key(token)
        self._visible(self.page.get_by_role("button", name="New session"))

    def refused_sign_in(self, token: str) -> str:
        """Sign in with a key the API refuses; the error the page shows."""
        self._submit_key(token)
        return str(self._visible(self.page.get_by_text("That key was refused")).inner_text())

    def _submit_key(self, token: str) -> None:
        self.page.goto(self.url)
        self._visible(self.page.get_by_label("API key", exact=True)).fill(token)
        self.page.get_by_role("button", name="Sign in").click()

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

    def open_session(self, title: str, turns: int) -> int:
        """Start a new session, then pick the one named ``title`` with ``turns`` questions in the sidebar's
        history; the number of answers the page shows for it."""
        from playwright.sync_api import expect

        self.page.get_by_role("button", name="New session").click()
        expect(self.page.get_by_test_id("stChatMessage")).to_have_count(0, timeout=self.timeout_ms)
        self.page.get_by_role("button", name=session_label(title, turns), exact=True).click()
        expect(self.page.get_by_text("Steps · route")).to_have_count(turns, timeout=self.timeout_ms)
        return int(self.page.get_by_text("Steps · route").count())

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "disabled": running animations (an expander opening) are fast-forwarded to their end first
        self.page.screenshot(path=str(path), animations="disabled")
        return path
